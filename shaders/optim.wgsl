// optim.wgsl: one AdamW step (PyTorch's AdamW: decoupled weight decay; the gradient scaled first, for clipping;
// the bias corrections come from the host as PyTorch's Python scalars do), one Adam step (PyTorch's: L2 weight decay added to the gradient, bias-corrected moments) and one SGD
// step with momentum, element by element. Adam's step counter and bias corrections live on the device (`state`):
// `adam_tick` advances them once per optimizer step (or sets the step), so that a training step's dispatches keep
// the same parameters and bind groups from step to step. It computes β^t by repeated squaring in f32, as the CPU's
// `f32::powi` does (compiler-rt's __powisf2), so both backends use the same bias corrections.
// Invocation index = gid.x + gid.y · 65535 · 64; dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(len / 64).
//
// Bindings (group 0):
//   0  uniform        OptParams (adam, sgd) / TickParams (adam_tick)
//   1  storage, rw    param: array<f32>
//   2  storage, read  grad: array<f32>
//   3  storage, rw    m: array<f32>     (Adam first moment; SGD velocity)
//   4  storage, rw    v: array<f32>     (Adam second moment)
//   5  storage, rw    state: array<f32> (Adam: [t as bits, 1 − β1^t, 1 / sqrt(1 − β2^t), unused])

struct OptParams {
    len: u32,
    pad0: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    momentum: f32,
}

struct TickParams {
    beta1: f32,
    beta2: f32,
    set_t: u32,  // 0: the next step (t + 1); else this step
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: OptParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> state: array<f32>;

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
    let denom = sqrt(vi) * state[2] + p.eps;
    param[i] = param[i] - (p.lr / state[1]) * mi / denom;
}

// β^n by repeated squaring, in the order of compiler-rt's __powisf2 (what f32::powi calls).
fn powi(base: f32, exponent: u32) -> f32 {
    var a = base;
    var n = exponent;
    var r = 1.0;
    loop {
        if ((n & 1u) == 1u) {
            r = r * a;
        }
        n = n >> 1u;
        if (n == 0u) {
            break;
        }
        a = a * a;
    }
    return r;
}

@group(0) @binding(0) var<uniform> tick: TickParams;

@compute @workgroup_size(1, 1, 1)
fn adam_tick() {
    var t = tick.set_t;
    if (t == 0u) {
        t = bitcast<u32>(state[0]) + 1u;
    }
    state[0] = bitcast<f32>(t);
    state[1] = 1.0 - powi(tick.beta1, t);
    state[2] = 1.0 / sqrt(1.0 - powi(tick.beta2, t));
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

// Lazy Adam over selected slices of a parameter (adam_selected): slice j (of `count`), element e (of `width`) is the
// parameter's value idx[j]·p_outer + e·p_inner and the gradient's g·g_outer + e·g_inner, g = idx[j] when by_index,
// else j. One invocation per (slice, element); the slices are distinct, so no two invocations write one value.
// Bindings as adam's, and 6: storage, read sel_idx: array<u32>.
struct SelParams {
    count: u32,
    width: u32,
    p_outer: u32,
    p_inner: u32,
    g_outer: u32,
    g_inner: u32,
    by_index: u32,
    pad0: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    pad1: u32,
    pad2: u32,
    pad3: u32,
}

@group(0) @binding(0) var<uniform> sp: SelParams;
@group(0) @binding(6) var<storage, read> sel_idx: array<u32>;

@compute @workgroup_size(64, 1, 1)
fn adam_selected(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n = gid.x + gid.y * 65535u * 64u;
    if (n >= sp.count * sp.width) {
        return;
    }
    let j = n / sp.width;
    let e = n % sp.width;
    let i = sel_idx[j];
    var g0 = j;
    if (sp.by_index == 1u) {
        g0 = i;
    }
    let pi = i * sp.p_outer + e * sp.p_inner;
    let g = grad[g0 * sp.g_outer + e * sp.g_inner] + sp.weight_decay * param[pi];
    let mi = sp.beta1 * m[pi] + (1.0 - sp.beta1) * g;
    let vi = sp.beta2 * v[pi] + (1.0 - sp.beta2) * g * g;
    m[pi] = mi;
    v[pi] = vi;
    let denom = sqrt(vi) * state[2] + sp.eps;
    param[pi] = param[pi] - (sp.lr / state[1]) * mi / denom;
}

// AdamW (adamw): p ← p·(1 − lr·wd); g ← grad·grad_scale; m, v as Adam's; p ← p − step_size · m / (√v / bc2_sqrt + eps)
// with step_size = lr / (1 − β1ᵗ) and bc2_sqrt = √(1 − β2ᵗ). Bindings as adam's, without `state`.
struct AdamWParams {
    len: u32,
    pad0: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_scale: f32,
    step_size: f32,
    bc2_sqrt: f32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> aw: AdamWParams;

@compute @workgroup_size(64, 1, 1)
fn adamw(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= aw.len) {
        return;
    }
    let g = grad[i] * aw.grad_scale;
    let pi = param[i] * (1.0 - aw.lr * aw.weight_decay);
    let mi = aw.beta1 * m[i] + (1.0 - aw.beta1) * g;
    let vi = aw.beta2 * v[i] + (1.0 - aw.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    let denom = sqrt(vi) / aw.bc2_sqrt + aw.eps;
    param[i] = pi - aw.step_size * (mi / denom);
}
