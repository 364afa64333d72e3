// gemm.wgsl: C = op(A)·op(B) + beta·C for row-major f32 matrices; op(A) is m×k, op(B) is k×n.
// A transposed (ta = 1) is stored k×m; B transposed (tb = 1) is stored n×k.
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

fn load_a(i: u32, kk: u32) -> f32 {
    if (i >= p.m) {
        return 0.0;
    }
    if (p.ta == 1u) {
        return a[kk * p.m + i];
    }
    return a[i * p.k + kk];
}

fn load_b(kk: u32, j: u32) -> f32 {
    if (j >= p.n) {
        return 0.0;
    }
    if (p.tb == 1u) {
        return b[j * p.k + kk];
    }
    return b[kk * p.n + j];
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) {
        return;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < p.k; kk = kk + 1u) {
        let bv = vec4<f32>(load_b(kk, col0), load_b(kk, col0 + 1u), load_b(kk, col0 + 2u), load_b(kk, col0 + 3u));
        acc[0] = acc[0] + load_a(row0, kk) * bv;
        acc[1] = acc[1] + load_a(row0 + 1u, kk) * bv;
        acc[2] = acc[2] + load_a(row0 + 2u, kk) * bv;
        acc[3] = acc[3] + load_a(row0 + 3u, kk) * bv;
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
