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
//   attention_backward_q  one invocation per (sequence, head, query): recomputes its scores over the real keys,
//                         writes its log-sum-exp and D = Σ_j P·dP to out2 (stats, rows × heads × 2) and its dq.
//   attention_backward_kv one invocation per (sequence, head, key): dk = scale·Σ_i P·(dP − D)·q_i and
//                         dv = Σ_i P·M·dO_i over every query row, from the stats; zero for padding keys.
//                         In training dP = M·(dO_i·v_j), M the dropout mask's factor (dropout.wgsl; 1 without).
//   pool_backward         one invocation per value of d_hidden (out) from d_pooled (b): mean (mode 0) or the first
//                         token (mode 1); zero on padding.
//   l2_normalize_backward from x (a) and dy (b): out = (dy − y·(y·dy)) / ‖x‖; one workgroup per row.
//   dropout               out *= the mask's factor of each value (dropout.wgsl); one invocation per value (rows
//                         values). Dropout's backward is the same product.
//   scale_values          out *= eps; one invocation per value (rows values).
//   sum_squares           out[w] = Σ a² over values w·4096 .. (w+1)·4096 (rows values); one workgroup each.
// Workgroups: (min(n, 65535), ceil(n / 65535), 1) over rows or over invocations / 64.
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

// q_i · k_j of head h (qkv rows of width 3·cols): the score before its scale.
fn qk(qi: u32, kj: u32) -> f32 {
    var acc = 0.0;
    for (var d = 0u; d < p.head_dim; d = d + 1u) { acc = acc + a[qi + d] * a[kj + d]; }
    return acc;
}

// dO_i · v_j (dO rows of width cols, qkv rows of width 3·cols).
fn dov(oi: u32, vj: u32) -> f32 {
    var acc = 0.0;
    for (var d = 0u; d < p.head_dim; d = d + 1u) { acc = acc + b[oi + d] * a[vj + d]; }
    return acc;
}

// The dropout factor M of probability (i, j) of sequence bq, head h (1 without dropout).
fn mask(bq: u32, h: u32, i: u32, j: u32) -> f32 {
    if (p.drop_threshold == 0u) { return 1.0; }
    return drop_factor(((bq * p.heads + h) * p.seq + i) * p.seq + j, p.drop_key, p.drop_threshold, p.drop_scale);
}

@compute @workgroup_size(64, 1, 1)
fn attention_backward_q(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = index_of(gid);
    if (n >= p.batch * p.heads * p.seq) { return; }
    let i = n % p.seq;
    let h = (n / p.seq) % p.heads;
    let bq = n / (p.seq * p.heads);
    let len = min(lens[bq], p.seq);
    let hd = p.head_dim;
    let width = 3u * p.cols;
    let q_at = (bq * p.seq + i) * width + h * hd;
    let o_at = (bq * p.seq + i) * p.cols + h * hd;
    var m = -3.0e38;
    var l = 0.0;
    for (var j = 0u; j < len; j = j + 1u) {
        let sc = p.eps * qk(q_at, (bq * p.seq + j) * width + p.cols + h * hd);
        let m_new = max(m, sc);
        l = l * exp(m - m_new) + exp(sc - m_new);
        m = m_new;
    }
    var lse = 0.0;
    if (len > 0u) { lse = m + log(l); }
    var dsum = 0.0;
    for (var j = 0u; j < len; j = j + 1u) {
        let row = (bq * p.seq + j) * width;
        let pr = exp(p.eps * qk(q_at, row + p.cols + h * hd) - lse);
        dsum = dsum + pr * dov(o_at, row + 2u * p.cols + h * hd) * mask(bq, h, i, j);
    }
    let si = ((bq * p.seq + i) * p.heads + h) * 2u;
    out2[si] = lse;
    out2[si + 1u] = dsum;
    var dq: array<f32, MAX_HEAD_DIM>;
    for (var d = 0u; d < hd; d = d + 1u) { dq[d] = 0.0; }
    for (var j = 0u; j < len; j = j + 1u) {
        let row = (bq * p.seq + j) * width;
        let pr = exp(p.eps * qk(q_at, row + p.cols + h * hd) - lse);
        let ds = pr * (dov(o_at, row + 2u * p.cols + h * hd) * mask(bq, h, i, j) - dsum) * p.eps;
        for (var d = 0u; d < hd; d = d + 1u) { dq[d] = dq[d] + ds * a[row + p.cols + h * hd + d]; }
    }
    for (var d = 0u; d < hd; d = d + 1u) { out[q_at + d] = dq[d]; }
}

@compute @workgroup_size(64, 1, 1)
fn attention_backward_kv(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = index_of(gid);
    if (n >= p.batch * p.heads * p.seq) { return; }
    let j = n % p.seq;
    let h = (n / p.seq) % p.heads;
    let bq = n / (p.seq * p.heads);
    let len = min(lens[bq], p.seq);
    let hd = p.head_dim;
    let width = 3u * p.cols;
    let row_j = (bq * p.seq + j) * width;
    let k_at = row_j + p.cols + h * hd;
    let v_at = row_j + 2u * p.cols + h * hd;
    var dk: array<f32, MAX_HEAD_DIM>;
    var dv: array<f32, MAX_HEAD_DIM>;
    for (var d = 0u; d < hd; d = d + 1u) { dk[d] = 0.0; dv[d] = 0.0; }
    if (j < len) {
        for (var i = 0u; i < p.seq; i = i + 1u) {
            let q_at = (bq * p.seq + i) * width + h * hd;
            let o_at = (bq * p.seq + i) * p.cols + h * hd;
            let si = ((bq * p.seq + i) * p.heads + h) * 2u;
            let pr = exp(p.eps * qk(q_at, k_at) - out2[si]);
            let f = mask(bq, h, i, j);
            let ds = pr * (dov(o_at, v_at) * f - out2[si + 1u]) * p.eps;
            let pm = pr * f;
            for (var d = 0u; d < hd; d = d + 1u) {
                dk[d] = dk[d] + ds * a[q_at + d];
                dv[d] = dv[d] + pm * b[o_at + d];
            }
        }
    }
    for (var d = 0u; d < hd; d = d + 1u) { out[k_at + d] = dk[d]; out[v_at + d] = dv[d]; }
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
