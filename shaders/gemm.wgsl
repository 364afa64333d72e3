// gemm.wgsl: C = op(A)·op(B) + beta·C for row-major f32 matrices; op(A) is m×k, op(B) is k×n.
// A transposed is stored k×m; B transposed is stored n×k. The override constants TA / TB pick the layout (one
// pipeline each); the uniform's ta / tb fields mirror them.
// Each invocation keeps a 4×4 block of C in registers (no workgroup memory); a 16×16 workgroup covers 64×64 of C.
// Dispatch: (ceil(n / 64), ceil(m / 64), splits). Sums run over k in order, so results repeat bit for bit.
//
// Split k (few output tiles, long k): workgroup z sums k in [z·kc, (z+1)·kc) into slice z of c (splits slices of
// m×n, beta ignored); then `reduce_splits`, one invocation per element of the real C (64-wide, 1-D over x and y),
// adds the slices in order: C = beta·C + Σ_z slice_z.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>         (main)
//   2  storage, read  b: array<f32>         (main)
//   3  storage, rw    c: array<f32>         (main: C, or the slices when split; reduce_splits: C)
//   4  storage, read  partials: array<f32>  (reduce_splits: the slices)
//   5  storage, read  bias: array<f32>   (the epilogue's bias: see gemm_epilogue.wgsl)

//#include gemm_params B=f32
@group(0) @binding(4) var<storage, read> partials: array<f32>;

// Which operands are transposed: fixed per pipeline (one pipeline per combination), so the loads do not branch.
override TA: bool = false;
override TB: bool = false;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    // Rows and columns past the edge read the last valid one (never written back), so the loop has no branches.
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
            av = vec4<f32>(a[base + rr.x], a[base + rr.y], a[base + rr.z], a[base + rr.w]);
        } else {
            av = vec4<f32>(a[rr.x * p.k + kk], a[rr.y * p.k + kk], a[rr.z * p.k + kk], a[rr.w * p.k + kk]);
        }
        if (TB) {
            bv = vec4<f32>(b[cc.x * p.k + kk], b[cc.y * p.k + kk], b[cc.z * p.k + kk], b[cc.w * p.k + kk]);
        } else {
            let base = kk * p.n;
            bv = vec4<f32>(b[base + cc.x], b[base + cc.y], b[base + cc.z], b[base + cc.w]);
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

@compute @workgroup_size(64, 1, 1)
fn reduce_splits(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    let mn = p.m * p.n;
    if (i >= mn) {
        return;
    }
    var v = 0.0;
    for (var z = 0u; z < p.splits; z = z + 1u) {
        v = v + partials[z * mn + i];
    }
    if (p.beta != 0.0) {
        v = v + p.beta * c[i];
    }
    c[i] = bias_act(v, i % p.n);
}

//#include gemm_epilogue
//#include activation
