// encoder.wgsl: the Transformer encoder's kernels besides the GEMMs (BERT family). A batch holds `batch` sequences
// padded to `seq` tokens, row b·seq + t of every activation; `lens[b]` tokens of sequence b are real, the rest is
// padding. Every reduction is a fixed tree over the 64 lanes of a workgroup, so results repeat bit for bit.
//
//   embed_layernorm  out[r] = LayerNorm(word[ids[r]] + pos[t + offset] + type[type_ids[r]]); one workgroup per row.
//   add_layernorm    x[r] = LayerNorm(x[r] + res[r]); one workgroup per row.
//   attention        multi-head self-attention of one query row per workgroup, with the padding mask: scores of
//                    the real keys into workgroup memory (seq ≤ 512), a stable softmax, the weighted sum of the
//                    values; no seq × seq buffer. qkv rows are [q | k | v], each `cols` wide, head h at h·head_dim.
//   pool             one invocation per output value: mean over the real tokens (mode 0), the first token (1) or
//                    the maximum over the real tokens (2).
//   l2_normalize     rows scaled to unit length (zero rows stay zero); one workgroup per row.
// Workgroups: (min(n, 65535), ceil(n / 65535), 1) over rows (attention: over batch·heads·seq query rows).
//
// Bindings (group 0):
//   0  uniform        EncoderParams
//   1  storage, read  ids: array<u32>        (embed_layernorm: token ids; attention, pool: lens per sequence)
//   2  storage, read  type_ids: array<u32>   (embed_layernorm)
//   3  storage, read  word: array<f32>       (embed_layernorm: word embeddings; add_layernorm: the residual;
//                                             attention: qkv, rows × 3·cols; pool: hidden, rows × cols)
//   4  storage, read  pos: array<f32>        (embed_layernorm: position embeddings)
//   5  storage, read  types: array<f32>      (embed_layernorm: token-type embeddings)
//   6  storage, read  gamma: array<f32>      (LayerNorm weight)
//   7  storage, read  beta: array<f32>       (LayerNorm bias)
//   8  storage, rw    out: array<f32>        (embed_layernorm, attention, pool: output; add_layernorm,
//                                             l2_normalize: x, in place)

struct EncoderParams {
    rows: u32,       // batch · seq (pool, l2_normalize: output rows)
    cols: u32,       // hidden width
    seq: u32,        // padded sequence length
    heads: u32,
    head_dim: u32,
    mode: u32,       // pool: 0 mean, 1 cls, 2 max; embed_layernorm: position offset
    eps: f32,        // LayerNorm epsilon; attention: the score scale
    batch: u32,
}

@group(0) @binding(0) var<uniform> p: EncoderParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> type_ids: array<u32>;
@group(0) @binding(3) var<storage, read> word: array<f32>;
@group(0) @binding(4) var<storage, read> pos: array<f32>;
@group(0) @binding(5) var<storage, read> types: array<f32>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> beta: array<f32>;
@group(0) @binding(8) var<storage, read_write> out: array<f32>;

const LANES: u32 = 64u;
var<workgroup> red: array<f32, 64>;
var<workgroup> scores: array<f32, 512>;

// The sum (or maximum, when `is_max`) of every lane's `v`, the same in every lane.
fn reduce(lane: u32, v: f32, is_max: bool) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            if (is_max) { red[lane] = max(red[lane], red[lane + s]); } else { red[lane] = red[lane] + red[lane + s]; }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn row_of(wid: vec3<u32>) -> u32 {
    return wid.x + wid.y * 65535u;
}

// LayerNorm of row r of `out` (already holding the sum), in place: two passes (mean, then variance).
fn layernorm_row(r: u32, lane: u32) {
    let base = r * p.cols;
    var s = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { s = s + out[base + c]; }
    let mean = reduce(lane, s, false) / f32(p.cols);
    var q = 0.0;
    for (var c = lane; c < p.cols; c = c + LANES) { let d = out[base + c] - mean; q = q + d * d; }
    let inv = 1.0 / sqrt(reduce(lane, q, false) / f32(p.cols) + p.eps);
    for (var c = lane; c < p.cols; c = c + LANES) {
        out[base + c] = (out[base + c] - mean) * inv * gamma[c] + beta[c];
    }
}

@compute @workgroup_size(64, 1, 1)
fn embed_layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    let t = r % p.seq + p.mode;
    let id = ids[r];
    let ty = type_ids[r];
    for (var c = lid.x; c < p.cols; c = c + LANES) {
        out[r * p.cols + c] = word[id * p.cols + c] + pos[t * p.cols + c] + types[ty * p.cols + c];
    }
    workgroupBarrier();
    layernorm_row(r, lid.x);
}

@compute @workgroup_size(64, 1, 1)
fn add_layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    for (var c = lid.x; c < p.cols; c = c + LANES) {
        out[r * p.cols + c] = out[r * p.cols + c] + word[r * p.cols + c];
    }
    workgroupBarrier();
    layernorm_row(r, lid.x);
}

@compute @workgroup_size(64, 1, 1)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    // Query row (b, h, i): index (b · heads + h) · seq + i.
    let qr = row_of(wid);
    if (qr >= p.batch * p.heads * p.seq) { return; }
    let i = qr % p.seq;
    let h = (qr / p.seq) % p.heads;
    let b = qr / (p.seq * p.heads);
    let len = ids[b];
    let lane = lid.x;
    let width = 3u * p.cols;
    let q_at = (b * p.seq + i) * width + h * p.head_dim;
    var m = -3.0e38;
    for (var j = lane; j < len; j = j + LANES) {
        let k_at = (b * p.seq + j) * width + p.cols + h * p.head_dim;
        var s = 0.0;
        for (var d = 0u; d < p.head_dim; d = d + 1u) { s = s + word[q_at + d] * word[k_at + d]; }
        s = s * p.eps;
        scores[j] = s;
        m = max(m, s);
    }
    m = reduce(lane, m, true);
    var z = 0.0;
    for (var j = lane; j < len; j = j + LANES) {
        let e = exp(scores[j] - m);
        scores[j] = e;
        z = z + e;
    }
    z = reduce(lane, z, false);
    let out_at = (b * p.seq + i) * p.cols + h * p.head_dim;
    for (var d = lane; d < p.head_dim; d = d + LANES) {
        var acc = 0.0;
        for (var j = 0u; j < len; j = j + 1u) {
            acc = acc + scores[j] * word[(b * p.seq + j) * width + 2u * p.cols + h * p.head_dim + d];
        }
        out[out_at + d] = acc / z;
    }
}

@compute @workgroup_size(64, 1, 1)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.rows * p.cols) { return; }
    let b = idx / p.cols;
    let c = idx % p.cols;
    let len = ids[b];
    let base = b * p.seq * p.cols + c;
    if (p.mode == 1u) {
        out[idx] = word[base];
        return;
    }
    var acc = 0.0;
    if (p.mode == 2u) { acc = -3.0e38; }
    for (var t = 0u; t < len; t = t + 1u) {
        let v = word[base + t * p.cols];
        if (p.mode == 2u) { acc = max(acc, v); } else { acc = acc + v; }
    }
    if (p.mode == 0u) { acc = acc / max(f32(len), 1.0); }
    out[idx] = acc;
}

@compute @workgroup_size(64, 1, 1)
fn l2_normalize(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = row_of(wid);
    if (r >= p.rows) { return; }
    var s = 0.0;
    for (var c = lid.x; c < p.cols; c = c + LANES) { let v = out[r * p.cols + c]; s = s + v * v; }
    let n = sqrt(reduce(lid.x, s, false));
    let inv = select(0.0, 1.0 / max(n, 1e-12), n > 0.0);
    for (var c = lid.x; c < p.cols; c = c + LANES) { out[r * p.cols + c] = out[r * p.cols + c] * inv; }
}
