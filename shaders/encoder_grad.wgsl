// encoder_grad.wgsl: the Transformer encoder's backward pass for fine-tuning (BERT family), and the forward ops that
// keep what it reads. Shapes as in encoder.wgsl: a batch of `batch` sequences padded to `seq` tokens, row b·seq + t.
// Row reductions are a fixed tree over the 64 lanes of a workgroup; loops over keys and queries run in order, so
// reruns are bit-identical. CPU twins: backend/cpu/encoder_grad.rs.
//
//   layernorm_keep        pre[r] += a[r] (mode 1), then out2[r] = LayerNorm(pre[r]) (gamma, beta = b); one
//                         workgroup per row. pre is `out`.
//   layernorm_backward    from pre (a) and dy (b): out = dx = (g − mean(g) − x̂·mean(g·x̂)) / σ, g = dy·γ, and
//                         out2 = dy·x̂; one workgroup per row.
//   act_forward           out = act(a), act = mode (activation.wgsl's codes); one invocation per value.
//   act_backward          out (the gradient, in place) *= act'(a); one invocation per value.
//   attention_backward_q  one workgroup per block of 64 queries of one (sequence, head), the real keys and values
//                         streamed through workgroup memory in tiles (as the forward attention): recomputes the
//                         scores, writes each query's log-sum-exp and D = Σ_j P·dP to out2 (stats, rows × heads ×
//                         2) and its dq.
//   attention_backward_kv one workgroup per block of 64 keys of one (sequence, head), every query row's q, dO and
//                         stats streamed in tiles: dk = scale·Σ_i P·(dP − D)·q_i and dv = Σ_i P·M·dO_i, from the
//                         stats; zero for padding keys.
//                         In training dP = M·(dO_i·v_j), M the dropout mask's factor (dropout.wgsl; 1 without).
//   pool_backward         one invocation per value of d_hidden (out) from d_pooled (b): mean (mode 0) or the first
//                         token (mode 1); zero on padding.
//   l2_normalize_backward from x (a) and dy (b): out = (dy − y·(y·dy)) / ‖x‖; one workgroup per row.
//   dropout               out *= the mask's factor of each value (dropout.wgsl); one invocation per value (rows
//                         values). Dropout's backward is the same product.
//   scale_values          out *= eps; one invocation per value (rows values).
//   sum_squares           out[w] = Σ a² over values w·4096 .. (w+1)·4096 (rows values); one workgroup each.
// Workgroups: (min(n, 65535), ceil(n / 65535), 1) over rows, blocks or invocations / 64.
//
// Bindings (group 0):
//   0  uniform        EncoderParams (rows, cols, seq, heads, head_dim, mode, eps: LayerNorm ε / score scale /
//                     factor, batch)
//   1  storage, read  lens: array<u32>
//   2  storage, read  a: array<f32>
//   3  storage, read  b: array<f32>
//   4  storage, read  gamma: array<f32>
//   5  storage, rw    out: array<f32>
//   6  storage, rw    out2: array<f32>

//#include activation
//#include dropout

struct EncoderParams {
    rows: u32,
    cols: u32,
    seq: u32,
    heads: u32,
    head_dim: u32,
    mode: u32,
    eps: f32,
    batch: u32,
    drop_key: u32,       // training: the dropout mask (dropout.wgsl); drop_threshold 0 drops nothing
    drop_threshold: u32,
    drop_scale: f32,
    drop_pad: u32,
}

@group(0) @binding(0) var<uniform> p: EncoderParams;
@group(0) @binding(1) var<storage, read> lens: array<u32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> out2: array<f32>;

const LANES: u32 = 64u;
const MAX_HEAD_DIM: u32 = 128u;
var<workgroup> red: array<f32, 64>;

// The sum of every lane's `v`, the same in every lane.
fn reduce(lane: u32, v: f32) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) { red[lane] = red[lane] + red[lane + s]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn row_of(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * 65535u;
}

fn index_of(gid: vec3<u32>) -> u32 {
    return gid.x + gid.y * 65535u * 64u;
}

// Mean and 1/σ of row r of `out`.
fn stats_of_out(base: u32, lane: u32) -> vec2<f32> {
    var s = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { s = s + out[base + c]; }
    let mean = reduce(lane, s) / f32(p.cols);
    var q = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { let d = out[base + c] - mean; q = q + d * d; }
    return vec2<f32>(mean, 1.0 / sqrt(reduce(lane, q) / f32(p.cols) + p.eps));
}

@compute @workgroup_size(64, 1, 1)
fn layernorm_keep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    if (p.mode == 1u) {
        for (var c = lid.x; c < p.cols; c = c + LANES) { out[base + c] = out[base + c] + a[base + c]; }
    }
    workgroupBarrier();
    let st = stats_of_out(base, lid.x);
    for (var c = lid.x; c < p.cols; c = c + LANES) {
        out2[base + c] = (out[base + c] - st.x) * st.y * gamma[c] + b[c];
    }
}

@compute @workgroup_size(64, 1, 1)
fn layernorm_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    let lane = lid.x;
    var s = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { s = s + a[base + c]; }
    let mean = reduce(lane, s) / f32(p.cols);
    var q = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { let d = a[base + c] - mean; q = q + d * d; }
    let inv = 1.0 / sqrt(reduce(lane, q) / f32(p.cols) + p.eps);
    var sg = 0.0;
    var sgx = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) {
        let xhat = (a[base + c] - mean) * inv;
        let g = b[base + c] * gamma[c];
        sg = sg + g;
        sgx = sgx + g * xhat;
    }
    let mg = reduce(lane, sg) / f32(p.cols);
    let mgx = reduce(lane, sgx) / f32(p.cols);
    for (var c = lane; c < p.cols; c = c + LANES) {
        let xhat = (a[base + c] - mean) * inv;
        let g = b[base + c] * gamma[c];
        out[base + c] = inv * (g - mg - xhat * mgx);
        out2[base + c] = b[base + c] * xhat;
    }
}

// act'(x) for activation.wgsl's codes.
fn derivative(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return select(0.0, 1.0, x > 0.0); }
        case 2u: { return 0.5 * (1.0 + erf_approx(x * 0.70710678118654752)) + x * 0.3989422804014327 * exp(-0.5 * x * x); }
        case 3u: {
            let t = tanh(clamp(0.79788456080286536 * (x + 0.044715 * x * x * x), -15.0, 15.0));
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.79788456080286536 * (1.0 + 3.0 * 0.044715 * x * x);
        }
        default: { return 1.0; }
    }
}

@compute @workgroup_size(64, 1, 1)
fn act_forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index_of(gid);
    if (i >= p.rows) { return; }
    out[i] = activate(a[i], p.mode);
}

@compute @workgroup_size(64, 1, 1)
fn act_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index_of(gid);
    if (i >= p.rows) { return; }
    out[i] = out[i] * derivative(a[i], p.mode);
}

// The dropout factor M of probability (i, j) of sequence bq, head h (1 without dropout).
fn mask(bq: u32, h: u32, i: u32, j: u32) -> f32 {
    if (p.drop_threshold == 0u) { return 1.0; }
    return drop_factor(((bq * p.heads + h) * p.seq + i) * p.seq + j, p.drop_key, p.drop_threshold, p.drop_scale);
}

// Attention's backward streams rows of one (sequence, head) through workgroup memory a tile at a time, as the
// forward kernel does (encoder.wgsl): `tile` rows of head_dim values in each of two arrays, and the tile's
// statistics (the kv pass).
const TILE_VALUES: u32 = 2048u;
const MAX_TILE_ROWS: u32 = 64u;
var<workgroup> tile_a: array<f32, TILE_VALUES>;
var<workgroup> tile_b: array<f32, TILE_VALUES>;
var<workgroup> tile_stats: array<f32, 128>;
var<workgroup> block_len: u32;

// The block of 64 rows of workgroup g, sequence b and head h: index (b · heads + h) · blocks + block (not valid
// past the last); the sequence's real tokens `len` (the same in every invocation) and the rows of a tile.
struct Block {
    b: u32,
    h: u32,
    first: u32,
    valid: bool,
    len: u32,
    tile: u32,
}

fn block_of(wid: vec3<u32>, lane: u32) -> Block {
    let blocks = (p.seq + LANES - 1u) / LANES;
    let g = row_of(wid);
    var k: Block;
    k.valid = g < p.batch * p.heads * blocks;
    k.first = (g % blocks) * LANES;
    k.h = (g / blocks) % p.heads;
    k.b = g / (blocks * p.heads);
    if (lane == 0u && k.valid) { block_len = min(lens[k.b], p.seq); }
    k.len = workgroupUniformLoad(&block_len);
    k.tile = min(MAX_TILE_ROWS, TILE_VALUES / p.head_dim);
    return k;
}

// Keys j0 .. j0 + n of sequence bq, head h into tile_a and their values into tile_b (lane's share).
fn load_keys(bq: u32, h: u32, j0: u32, n: u32, lane: u32) {
    let hd = p.head_dim;
    for (var e = lane; e < n * hd; e = e + LANES) {
        let at = (bq * p.seq + j0 + e / hd) * 3u * p.cols + h * hd + e % hd;
        tile_a[e] = a[at + p.cols];
        tile_b[e] = a[at + 2u * p.cols];
    }
}

// One workgroup per block of 64 query rows of one (sequence, head), one query per invocation. The real keys and
// values stream through workgroup memory twice: first the running maximum m, the sum l of e^(s − m) and the sum u
// of e^(s − m)·M·(dO_i·v_j) (rescaled as m grows), which give the log-sum-exp m + log l and D = Σ_j P·dP = u / l;
// then dq = scale · Σ_j P·(M·(dO_i·v_j) − D)·k_j. Writes the statistics (lse, D) to out2 and dq to out.
@compute @workgroup_size(64, 1, 1)
fn attention_backward_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let blk = block_of(wid, lane);
    if (!blk.valid) { return; }
    let bq = blk.b; let h = blk.h; let len = blk.len; let tile = blk.tile;
    let hd = p.head_dim;
    let width = 3u * p.cols;
    let i = blk.first + lane;
    let has_query = i < p.seq;
    var q: array<f32, MAX_HEAD_DIM>;
    var dout: array<f32, MAX_HEAD_DIM>;
    var dq: array<f32, MAX_HEAD_DIM>;
    let q_at = (bq * p.seq + i) * width + h * hd;
    let o_at = (bq * p.seq + i) * p.cols + h * hd;
    if (has_query) {
        for (var d = 0u; d < hd; d = d + 1u) { q[d] = a[q_at + d]; dout[d] = b[o_at + d]; dq[d] = 0.0; }
    }
    var m = -3.0e38;
    var l = 0.0;
    var u = 0.0;
    for (var j0 = 0u; j0 < len; j0 = j0 + tile) {
        let n = min(tile, len - j0);
        workgroupBarrier();
        load_keys(bq, h, j0, n, lane);
        workgroupBarrier();
        if (has_query) {
            for (var t = 0u; t < n; t = t + 1u) {
                var sc = 0.0;
                var dv = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    sc = sc + q[d] * tile_a[t * hd + d];
                    dv = dv + dout[d] * tile_b[t * hd + d];
                }
                sc = sc * p.eps;
                let m_new = max(m, sc);
                let r = exp(m - m_new);
                let e = exp(sc - m_new);
                l = l * r + e;
                u = u * r + e * dv * mask(bq, h, i, j0 + t);
                m = m_new;
            }
        }
    }
    var lse = 0.0;
    var dsum = 0.0;
    if (len > 0u) {
        lse = m + log(l);
        dsum = u / l;
    }
    for (var j0 = 0u; j0 < len; j0 = j0 + tile) {
        let n = min(tile, len - j0);
        workgroupBarrier();
        load_keys(bq, h, j0, n, lane);
        workgroupBarrier();
        if (has_query) {
            for (var t = 0u; t < n; t = t + 1u) {
                var sc = 0.0;
                var dv = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    sc = sc + q[d] * tile_a[t * hd + d];
                    dv = dv + dout[d] * tile_b[t * hd + d];
                }
                let pr = exp(p.eps * sc - lse);
                let ds = pr * (dv * mask(bq, h, i, j0 + t) - dsum) * p.eps;
                for (var d = 0u; d < hd; d = d + 1u) { dq[d] = dq[d] + ds * tile_a[t * hd + d]; }
            }
        }
    }
    if (has_query) {
        let si = ((bq * p.seq + i) * p.heads + h) * 2u;
        out2[si] = lse;
        out2[si + 1u] = dsum;
        for (var d = 0u; d < hd; d = d + 1u) { out[q_at + d] = dq[d]; }
    }
}

// One workgroup per block of 64 key rows of one (sequence, head), one key per invocation. Every query row (padding
// rows too: their gradient is the caller's) streams through workgroup memory with its statistics from the q pass:
// dk = scale · Σ_i P·(M·(dO_i·v_j) − D_i)·q_i and dv = Σ_i P·M·dO_i. Padding keys get zeros.
@compute @workgroup_size(64, 1, 1)
fn attention_backward_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let lane = lid.x;
    let blk = block_of(wid, lane);
    if (!blk.valid) { return; }
    let bq = blk.b; let h = blk.h; let len = blk.len; let tile = blk.tile;
    let hd = p.head_dim;
    let width = 3u * p.cols;
    let j = blk.first + lane;
    let has_key = j < len;
    let row_j = (bq * p.seq + j) * width;
    let k_at = row_j + p.cols + h * hd;
    let v_at = row_j + 2u * p.cols + h * hd;
    var k: array<f32, MAX_HEAD_DIM>;
    var v: array<f32, MAX_HEAD_DIM>;
    var dk: array<f32, MAX_HEAD_DIM>;
    var dv: array<f32, MAX_HEAD_DIM>;
    for (var d = 0u; d < hd; d = d + 1u) { dk[d] = 0.0; dv[d] = 0.0; }
    if (has_key) {
        for (var d = 0u; d < hd; d = d + 1u) { k[d] = a[k_at + d]; v[d] = a[v_at + d]; }
    }
    // Only blocks holding real keys read the queries (the loop's bound is the same in every invocation).
    var queries = p.seq;
    if (blk.first >= len) { queries = 0u; }
    for (var i0 = 0u; i0 < queries; i0 = i0 + tile) {
        let n = min(tile, queries - i0);
        workgroupBarrier();
        for (var e = lane; e < n * hd; e = e + LANES) {
            let r = bq * p.seq + i0 + e / hd;
            tile_a[e] = a[r * width + h * hd + e % hd];
            tile_b[e] = b[r * p.cols + h * hd + e % hd];
        }
        for (var e = lane; e < 2u * n; e = e + LANES) {
            tile_stats[e] = out2[((bq * p.seq + i0 + e / 2u) * p.heads + h) * 2u + e % 2u];
        }
        workgroupBarrier();
        if (has_key) {
            for (var t = 0u; t < n; t = t + 1u) {
                var sc = 0.0;
                var dov = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) {
                    sc = sc + tile_a[t * hd + d] * k[d];
                    dov = dov + tile_b[t * hd + d] * v[d];
                }
                let pr = exp(p.eps * sc - tile_stats[2u * t]);
                let f = mask(bq, h, i0 + t, j);
                let ds = pr * (dov * f - tile_stats[2u * t + 1u]) * p.eps;
                let pm = pr * f;
                for (var d = 0u; d < hd; d = d + 1u) {
                    dk[d] = dk[d] + ds * tile_a[t * hd + d];
                    dv[d] = dv[d] + pm * tile_b[t * hd + d];
                }
            }
        }
    }
    if (j < p.seq) {
        for (var d = 0u; d < hd; d = d + 1u) { out[k_at + d] = dk[d]; out[v_at + d] = dv[d]; }
    }
}

@compute @workgroup_size(64, 1, 1)
fn pool_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index_of(gid);
    if (i >= p.batch * p.seq * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let bq = r / p.seq;
    let t = r % p.seq;
    let len = lens[bq];
    var v = 0.0;
    if (p.mode == 0u && t < len) { v = b[bq * p.cols + c] / f32(len); }
    if (p.mode == 1u && t == 0u) { v = b[bq * p.cols + c]; }
    out[i] = v;
}

@compute @workgroup_size(64, 1, 1)
fn l2_normalize_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    let base = r * p.cols;
    var s = 0.0;
    for (var c = lid.x; c < p.cols; c = c + LANES) { s = s + a[base + c] * a[base + c]; }
    let n = max(sqrt(reduce(lid.x, s)), 1e-12);
    var dt = 0.0;
    for (var c = lid.x; c < p.cols; c = c + LANES) { dt = dt + a[base + c] / n * b[base + c]; }
    let dot = reduce(lid.x, dt);
    for (var c = lid.x; c < p.cols; c = c + LANES) {
        out[base + c] = (b[base + c] - a[base + c] / n * dot) / n;
    }
}

@compute @workgroup_size(64, 1, 1)
fn dropout(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index_of(gid);
    if (i >= p.rows) { return; }
    out[i] = out[i] * drop_factor(i, p.drop_key, p.drop_threshold, p.drop_scale);
}

@compute @workgroup_size(64, 1, 1)
fn scale_values(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index_of(gid);
    if (i >= p.rows) { return; }
    out[i] = out[i] * p.eps;
}

const SQUARES_BLOCK: u32 = 4096u;

@compute @workgroup_size(64, 1, 1)
fn sum_squares(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = row_of(wid);
    let start = w * SQUARES_BLOCK;
    if (start >= p.rows) { return; }
    let end = min(start + SQUARES_BLOCK, p.rows);
    var s = 0.0;
    for (var i = start + lid.x; i < end; i = i + LANES) { s = s + a[i] * a[i]; }
    let total = reduce(lid.x, s);
    if (lid.x == 0u) { out[w] = total; }
}
