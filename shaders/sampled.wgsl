// sampled.wgsl: the sampled softmax of large catalogues. `gather` copies a batch's candidates' slices out of a
// parameter (the output layer's item-major weight rows, or its bias values); `sampled_xent` is the loss and its
// gradient over those candidates, one workgroup per row as softmax_xent.wgsl: for row r the active columns are the
// shared negatives (is_shared[j] = 1) and the row's own target column; z = logit + bias − log_q; the row's loss is
// log Σ_active e^(z − max) − (z_target − max); the logits are replaced by the gradient of the mean loss,
// (softmax − onehot) / rows on active columns and 0 elsewhere (column sums: elementwise.wgsl). Reductions are fixed
// trees over 256 lanes.
// gather: dst[j · width + e] = src[idx[j] · outer + e · inner], zeros where idx[j] is 0xffffffff (NO_ROW: rows
// of padding); invocation index = gid.x + gid.y · 65535 · 64, one
// per output value; dispatch as groups_1d.
// sampled_xent: row = wg.x + wg.y · 65535; dispatch (min(rows, 65535), ceil(rows / 65535), 1).
//
// Bindings (group 0):
//   0  uniform        GatherParams (gather), SampledParams (sampled_xent)
//   1  storage, read  src: array<f32>       (gather)
//   2  storage, read  idx: array<u32>       (gather: the slices; sampled_xent: each row's target column)
//   3  storage, rw    dst: array<f32>       (gather: count × width; sampled_xent: the logits, rows × count)
//   4  storage, read  bias: array<f32>      (sampled_xent: count)
//   5  storage, read  log_q: array<f32>     (sampled_xent: count)
//   6  storage, read  is_shared: array<f32> (sampled_xent: count)
//   7  storage, rw    losses: array<f32>    (sampled_xent: rows)

struct SampledParams {
    rows: u32,
    cols: u32,
    count: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: SampledParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> log_q: array<f32>;
@group(0) @binding(6) var<storage, read> is_shared: array<f32>;
@group(0) @binding(7) var<storage, read_write> losses: array<f32>;

struct GatherParams {
    count: u32,
    width: u32,
    outer: u32,
    inner: u32,
}

@group(0) @binding(0) var<uniform> gp: GatherParams;

@compute @workgroup_size(64, 1, 1)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= gp.count * gp.width) {
        return;
    }
    let j = i / gp.width;
    let e = i % gp.width;
    let at = idx[j];
    if (at == 0xffffffffu) {
        dst[i] = 0.0;
        return;
    }
    dst[i] = src[at * gp.outer + e * gp.inner];
}

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn sampled_xent(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) {
        return;
    }
    let n = p.count;
    let base = r * n;
    let t = idx[r];
    var m = -3.402823e38;
    for (var j = li; j < n; j = j + 256u) {
        let z = dst[base + j] + bias[j] - log_q[j];
        dst[base + j] = z;
        if (is_shared[j] > 0.0 || j == t) {
            m = max(m, z);
        }
    }
    red[li] = m;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = max(red[li], red[li + s]);
        }
        workgroupBarrier();
    }
    let mx = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var j = li; j < n; j = j + 256u) {
        if (is_shared[j] > 0.0 || j == t) {
            sum = sum + exp(dst[base + j] - mx);
        }
    }
    red[li] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
    let log_sum = log(red[0]);
    let zt = dst[base + t];
    workgroupBarrier();
    let inv_rows = 1.0 / f32(p.rows);
    for (var j = li; j < n; j = j + 256u) {
        var g = 0.0;
        if (is_shared[j] > 0.0 || j == t) {
            g = exp(dst[base + j] - mx - log_sum) * inv_rows;
            if (j == t) {
                g = g - inv_rows;
            }
        }
        dst[base + j] = g;
    }
    if (li == 0u) {
        losses[r] = mx + log_sum - zt;
    }
}
