// optim.wgsl: one Adam step (PyTorch's: L2 weight decay added to the gradient, bias-corrected moments) and one SGD
// step with momentum, element by element. The bias corrections are computed on the host in f32, as the CPU does.
// Invocation index = gid.x + gid.y · 65535 · 64; dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(len / 64).
//
// Bindings (group 0):
//   0  uniform        OptParams
//   1  storage, rw    param: array<f32>
//   2  storage, read  grad: array<f32>
//   3  storage, rw    m: array<f32>     (Adam first moment; SGD velocity)
//   4  storage, rw    v: array<f32>     (Adam second moment)

struct OptParams {
    len: u32,
    pad0: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bc1: f32,
    inv_bc2_sqrt: f32,
    momentum: f32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> p: OptParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn adam(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= p.len) {
        return;
    }
    let g = grad[i] + p.weight_decay * param[i];
    let mi = p.beta1 * m[i] + (1.0 - p.beta1) * g;
    let vi = p.beta2 * v[i] + (1.0 - p.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) * p.inv_bc2_sqrt + p.eps;
    param[i] = param[i] - (p.lr / p.bc1) * mi / denom;
}

@compute @workgroup_size(64, 1, 1)
fn sgd(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= p.len) {
        return;
    }
    let g = grad[i] + p.weight_decay * param[i];
    let vel = p.momentum * m[i] + g;
    m[i] = vel;
    param[i] = param[i] - p.lr * vel;
}
