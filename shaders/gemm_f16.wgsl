// gemm_f16.wgsl: the f16 path's products without tensor cores: C = op(A)·op(B) + beta·C with B stored in f16 (a
// dense layer's weights, stored once) and A in f32 (activations), each value of A rounded to f16 as it is read, so
// the products' inputs are what a tensor-core kernel multiplies (f16 × f16, exact in f32) and every sum runs in f32.
// The same layout, tiling and split-k as gemm.wgsl (4×4 of C per invocation, 16×16 invocations per 64×64 tile;
// `reduce_splits` there adds the slices), the same epilogue, and gemm.wgsl's clamped loads and guarded stores: like
// it, it runs without injected bounds checks (see pipelines.rs). Needs the `SHADER_F16` feature. The CPU twin is
// `cpu::matmul_f16_inputs`; the tensor-core kernel (gemm_coop.wgsl) computes the same.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>
//   2  storage, read  b: array<f16>
//   3  storage, rw    c: array<f32>         (C, or the slices when split)
//   5  storage, read  bias: array<f32>      (the epilogue's bias: see gemm_epilogue.wgsl)

enable f16;

//#include gemm_params B=f16

override TA: bool = false;
override TB: bool = false;

// A value of A as the product takes it: rounded to f16.
fn a_at(i: u32) -> f32 {
    return f32(f16(a[i]));
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    let rr = vec4<u32>(min(row0, p.m - 1u), min(row0 + 1u, p.m - 1u), min(row0 + 2u, p.m - 1u), min(row0 + 3u, p.m - 1u));
    let cc = vec4<u32>(min(col0, p.n - 1u), min(col0 + 1u, p.n - 1u), min(col0 + 2u, p.n - 1u), min(col0 + 3u, p.n - 1u));
    var acc: array<vec4<f32>, 4>;
    let k_begin = gid.z * p.kc;
    let k_end = min(p.k, k_begin + p.kc);
    let slice = gid.z * p.m * p.n;
    for (var kk = k_begin; kk < k_end; kk = kk + 1u) {
        var av: vec4<f32>;
        var bv: vec4<f32>;
        if (TA) {
            let base = kk * p.m;
            av = vec4<f32>(a_at(base + rr.x), a_at(base + rr.y), a_at(base + rr.z), a_at(base + rr.w));
        } else {
            av = vec4<f32>(a_at(rr.x * p.k + kk), a_at(rr.y * p.k + kk), a_at(rr.z * p.k + kk), a_at(rr.w * p.k + kk));
        }
        if (TB) {
            bv = vec4<f32>(vec4<f16>(b[cc.x * p.k + kk], b[cc.y * p.k + kk], b[cc.z * p.k + kk], b[cc.w * p.k + kk]));
        } else {
            let base = kk * p.n;
            bv = vec4<f32>(vec4<f16>(b[base + cc.x], b[base + cc.y], b[base + cc.z], b[base + cc.w]));
        }
        acc[0] = acc[0] + av.x * bv;
        acc[1] = acc[1] + av.y * bv;
        acc[2] = acc[2] + av.z * bv;
        acc[3] = acc[3] + av.w * bv;
    }
    for (var i = 0u; i < 4u; i = i + 1u) {
        let row = row0 + i;
        if (row < p.m) {
            for (var j = 0u; j < 4u; j = j + 1u) {
                let col = col0 + j;
                if (col < p.n) {
                    let at = slice + row * p.n + col;
                    var v = acc[i][j];
                    if (p.splits == 1u && p.beta != 0.0) {
                        v = v + p.beta * c[at];
                    }
                    c[at] = epilogue(v, col);
                }
            }
        }
    }
}

//#include gemm_epilogue
//#include activation
