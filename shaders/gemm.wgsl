// gemm.wgsl: C = op(A)·op(B) + beta·C for row-major f32 matrices; op(A) is m×k, op(B) is k×n.
// A transposed is stored k×m; B transposed is stored n×k. The override constants TA / TB pick the layout (one
// pipeline each); the uniform's ta / tb fields mirror them.
// Each invocation keeps a 4×4 block of C in registers (no workgroup memory); a 16×16 workgroup covers 64×64 of C.
// Dispatch: (ceil(n / 64), ceil(m / 64), 1). Sums run over k in order, so results repeat bit for bit.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>
//   2  storage, read  b: array<f32>
//   3  storage, rw    c: array<f32>   (read only when beta != 0)

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    ta: u32,
    tb: u32,
    beta: f32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

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
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
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
                    let at = row * p.n + col;
                    var v = acc[i][j];
                    if (p.beta != 0.0) {
                        v = v + p.beta * c[at];
                    }
                    c[at] = v;
                }
            }
        }
    }
}
