// elementwise.wgsl: bias + activation, ReLU's backward, and column sums (bias gradients). Activations (`act`):
// 0 identity, 1 ReLU, 2 GELU with erf (BERT's "gelu"; erf by Abramowitz & Stegun 7.1.26, |error| < 1.5e-7),
// 3 GELU with tanh ("gelu_new").
// Invocation index = gid.x + gid.y · 65535 · 64; dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(n / 64).
// Tall column sums run in two passes: `column_sums_chunks` (dispatch z = chunks) sums each `chunk` rows into row
// gid.z of `out` (chunks × cols), then `column_sums` adds those rows in order; each sum keeps a fixed order.
//
// Bindings (group 0):
//   0  uniform        EwParams { rows, cols, act }
//   1  storage, rw    x: array<f32>        bias_act: rows×cols, in place; relu_backward: the gradient, in place
//   2  storage, read  y: array<f32>        bias_act: the bias (cols); relu_backward: the activation
//   3  storage, rw    out: array<f32>      column_sums: cols; column_sums_chunks: chunks × cols
//   4  storage, read  src: array<f32>      column_sums(_chunks): rows×cols

struct EwParams {
    rows: u32,
    cols: u32,
    act: u32,    // bias_act: the activation
    chunk: u32,  // column_sums_chunks: rows per chunk
}

@group(0) @binding(0) var<uniform> p: EwParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read> src: array<f32>;

//#include activation

@compute @workgroup_size(64, 1, 1)
fn bias_act(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.rows * p.cols) {
        return;
    }
    let v = x[idx] + y[idx % p.cols];
    x[idx] = activate(v, p.act);
}

@compute @workgroup_size(64, 1, 1)
fn relu_backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.rows * p.cols) {
        return;
    }
    if (y[idx] <= 0.0) {
        x[idx] = 0.0;
    }
}

@compute @workgroup_size(64, 1, 1)
fn column_sums(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x + gid.y * 65535u * 64u;
    if (col >= p.cols) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < p.rows; r = r + 1u) {
        s = s + src[r * p.cols + col];
    }
    out[col] = s;
}

@compute @workgroup_size(64, 1, 1)
fn column_sums_chunks(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col = gid.x + gid.y * 65535u * 64u;
    if (col >= p.cols) {
        return;
    }
    let r0 = gid.z * p.chunk;
    let r1 = min(p.rows, r0 + p.chunk);
    var s = 0.0;
    for (var r = r0; r < r1; r = r + 1u) {
        s = s + src[r * p.cols + col];
    }
    out[gid.z * p.cols + col] = s;
}
