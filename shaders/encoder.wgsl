// encoder.wgsl: the Transformer encoder's kernels besides the GEMMs (BERT family). A batch holds `batch` sequences
// padded to `seq` tokens, row b·seq + t of every activation; `lens[b]` tokens of sequence b are real, the rest is
// padding. Every reduction is a fixed tree over the 64 lanes of a workgroup, so results repeat bit for bit.
//
//   embed_layernorm  out[r] = LayerNorm(word[ids[r]] + pos[t + offset] + type[type_ids[r]]); one workgroup per row.
//   embed_sum        out[r] = word[ids[r]] + pos[t + offset] + type[type_ids[r]] (fine-tuning keeps the sum for
//                    LayerNorm's backward); one invocation per value.
//   add_layernorm    x[r] = LayerNorm(x[r] + res[r]); one workgroup per row.
//   attention        multi-head self-attention with the padding mask, in tiles (FlashAttention's scheme): a
//                    workgroup takes a block of 64 query rows of one (sequence, head), one query per invocation;
//                    the real keys and values stream through workgroup memory a tile at a time (64 keys at
//                    head_dim ≤ 32, 2048 / head_dim keys above), read once for all 64 queries, and each query keeps
//                    a running maximum, sum and weighted sum of the values (online softmax). Nothing of size
//                    seq × seq is stored; keys are taken in order, so reruns are bit-identical. head_dim ≤ 128.
//                    In training (drop_threshold ≠ 0) each probability is dropped or scaled by the mask of
//                    dropout.wgsl, value ((b·heads + h)·seq + i)·seq + j.
//                    qkv rows are [q | k | v], each `cols` wide, head h at h·head_dim.
//   pool             one invocation per output value: mean over the real tokens (mode 0), the first token (1) or
//                    the maximum over the real tokens (2).
//   l2_normalize     rows scaled to unit length (zero rows stay zero); one workgroup per row.
// Workgroups: (min(n, 65535), ceil(n / 65535), 1) over rows (attention: over batch·heads·ceil(seq / 64) query
// blocks).
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

//#include dropout

struct EncoderParams {
    rows: u32,       // batch · seq (pool, l2_normalize: output rows)
    cols: u32,       // hidden width
    seq: u32,        // padded sequence length
    heads: u32,
    head_dim: u32,
    mode: u32,       // pool: 0 mean, 1 cls, 2 max; embed_layernorm: position offset
    eps: f32,        // LayerNorm epsilon; attention: the score scale
    batch: u32,
    drop_key: u32,       // training: the dropout mask (dropout.wgsl); drop_threshold 0 drops nothing
    drop_threshold: u32,
    drop_scale: f32,
    drop_pad: u32,
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
// attention's tiles of keys and values (keys × head_dim values each), and the block's sequence length.
const TILE_VALUES: u32 = 2048u;
const MAX_TILE_KEYS: u32 = 64u;
const MAX_HEAD_DIM: u32 = 128u;
var<workgroup> k_tile: array<f32, TILE_VALUES>;
var<workgroup> v_tile: array<f32, TILE_VALUES>;
var<workgroup> block_len: u32;

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
fn embed_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= p.rows * p.cols) { return; }
    let r = i / p.cols;
    let c = i % p.cols;
    let t = r % p.seq + p.mode;
    out[i] = word[ids[r] * p.cols + c] + pos[t * p.cols + c] + types[type_ids[r] * p.cols + c];
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
    // Query block (b, h, qb): index (b · heads + h) · blocks + qb.
    let blocks = (p.seq + LANES - 1u) / LANES;
    let g = row_of(wid);
    if (g >= p.batch * p.heads * blocks) { return; }
    let qb = g % blocks;
    let h = (g / blocks) % p.heads;
    let b = g / (blocks * p.heads);
    let lane = lid.x;
    if (lane == 0u) { block_len = min(ids[b], p.seq); }
    // The real keys, the same in every invocation (the tiles' loop holds barriers).
    let len = workgroupUniformLoad(&block_len);
    let hd = p.head_dim;
    let width = 3u * p.cols;
    let tile = min(MAX_TILE_KEYS, TILE_VALUES / hd);
    let i = qb * LANES + lane;
    let has_query = i < p.seq;
    var q: array<f32, MAX_HEAD_DIM>;
    var acc: array<f32, MAX_HEAD_DIM>;
    var s: array<f32, MAX_TILE_KEYS>;
    if (has_query) {
        let q_at = (b * p.seq + i) * width + h * hd;
        for (var d = 0u; d < hd; d = d + 1u) { q[d] = word[q_at + d]; acc[d] = 0.0; }
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var j0 = 0u; j0 < len; j0 = j0 + tile) {
        let n = min(tile, len - j0);
        workgroupBarrier();
        for (var e = lane; e < n * hd; e = e + LANES) {
            let at = (b * p.seq + j0 + e / hd) * width + h * hd + e % hd;
            k_tile[e] = word[at + p.cols];
            v_tile[e] = word[at + 2u * p.cols];
        }
        workgroupBarrier();
        if (has_query) {
            // The tile's scores, its maximum, then the running sums rescaled once per tile.
            var tmax = m;
            for (var t = 0u; t < n; t = t + 1u) {
                var dot = 0.0;
                for (var d = 0u; d < hd; d = d + 1u) { dot = dot + q[d] * k_tile[t * hd + d]; }
                s[t] = dot * p.eps;
                tmax = max(tmax, s[t]);
            }
            let scale = exp(m - tmax);
            l = l * scale;
            for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] * scale; }
            for (var t = 0u; t < n; t = t + 1u) {
                let e = exp(s[t] - tmax);
                l = l + e;
                // Training: the probabilities' dropout (the sum l is of the probabilities before it).
                var ev = e;
                if (p.drop_threshold != 0u) {
                    let at = ((b * p.heads + h) * p.seq + i) * p.seq + j0 + t;
                    ev = e * drop_factor(at, p.drop_key, p.drop_threshold, p.drop_scale);
                }
                for (var d = 0u; d < hd; d = d + 1u) { acc[d] = acc[d] + ev * v_tile[t * hd + d]; }
            }
            m = tmax;
        }
    }
    if (has_query) {
        // No real key (an empty sequence): zeros, as the CPU twin writes.
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let out_at = (b * p.seq + i) * p.cols + h * hd;
        for (var d = 0u; d < hd; d = d + 1u) { out[out_at + d] = acc[d] * inv; }
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
