// softmax_xent.wgsl: fused, numerically stable softmax cross-entropy, one workgroup per row.
// logits (rows×cols) are replaced by the gradient of the mean loss, (softmax − onehot(target)) / rows;
// losses[row] = log Σ e^(x − max) − (x_target − max). Reductions are fixed trees over 256 lanes.
// Dispatch: (min(rows, 65535), ceil(rows / 65535), 1); row = wg.x + wg.y · 65535.
//
// Bindings (group 0):
//   0  uniform        SoftmaxParams
//   1  storage, rw    logits: array<f32>
//   2  storage, read  targets: array<u32>
//   3  storage, rw    losses: array<f32>

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: SoftmaxParams;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> losses: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let r = wg.x + wg.y * 65535u;
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    let t = targets[r];
    let xt = logits[base + t];
    var m = -3.402823e38;
    for (var j = li; j < p.cols; j = j + 256u) {
        m = max(m, logits[base + j]);
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
    for (var j = li; j < p.cols; j = j + 256u) {
        let e = exp(logits[base + j] - mx);
        logits[base + j] = e;
        sum = sum + e;
    }
    red[li] = sum;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (li < s) {
            red[li] = red[li] + red[li + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    let inv_rows = 1.0 / f32(p.rows);
    let scale = inv_rows / total;
    for (var j = li; j < p.cols; j = j + 256u) {
        var g = logits[base + j] * scale;
        if (j == t) {
            g = g - inv_rows;
        }
        logits[base + j] = g;
    }
    if (li == 0u) {
        losses[r] = log(total) - (xt - mx);
    }
}
