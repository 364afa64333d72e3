// gemm_tiled128.wgsl: C = op(A)·op(B) + beta·C, as gemm.wgsl (same parameters, bindings and split-k slices; its
// `reduce_splits` adds the slices), for large products on hardware GPUs: a 16×16 workgroup covers 128×128 of C, each
// invocation 8×8 (rows y + 16i, columns x + 16j) in registers; per step of 16 along k the workgroup loads a 16×128
// tile of A and of B into workgroup memory (zeros past the edges). The write-back uses constant indices only, so
// the accumulators stay in registers. Dispatch (ceil(n / TILE), ceil(m / TILE), splits): the host reads TILE below.
// H200, Vulkan: 28.2 TFLOP/s at 4096³ and 30.4 at 8192³ (cuBLAS FP32 50.6 / 50.8); smaller products go to
// gemm_tiled.wgsl (more workgroups). Sums run over k in order, so results repeat bit for bit.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>
//   2  storage, read  b: array<f32>
//   3  storage, rw    c: array<f32>   (C, or the slices when split; read only when beta != 0 and not split)

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    ta: u32,
    tb: u32,
    beta: f32,
    kc: u32,      // k per slice (= k when not split)
    splits: u32,  // slices of k (1 = not split)
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

// Which operands are transposed: fixed per pipeline (one pipeline per combination).
override TA: bool = false;
override TB: bool = false;

const TILE: u32 = 128u;

var<workgroup> tile_a: array<array<f32, 128>, 16>;  // [k][row]
var<workgroup> tile_b: array<array<f32, 128>, 16>;  // [k][col]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row_base = wid.y * 128u;
    let col_base = wid.x * 128u;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, 16>;
    let k_begin = wid.z * p.kc;
    let k_end = min(p.k, k_begin + p.kc);
    let slice = wid.z * p.m * p.n;
    for (var k0 = k_begin; k0 < k_end; k0 = k0 + 16u) {
        for (var q = 0u; q < 8u; q = q + 1u) {
            let e = t + 256u * q;
            var kk: u32;
            var rc: u32;
            if (TA) { kk = e / 128u; rc = e % 128u; } else { kk = e % 16u; rc = e / 16u; }
            let kg = k0 + kk;
            let row = row_base + rc;
            var va = 0.0;
            if (kg < k_end && row < p.m) {
                if (TA) { va = a[kg * p.m + row]; } else { va = a[row * p.k + kg]; }
            }
            tile_a[kk][rc] = va;
            var kb: u32;
            var cb: u32;
            if (TB) { kb = e % 16u; cb = e / 16u; } else { kb = e / 128u; cb = e % 128u; }
            let kgb = k0 + kb;
            let col = col_base + cb;
            var vb = 0.0;
            if (kgb < k_end && col < p.n) {
                if (TB) { vb = b[col * p.k + kgb]; } else { vb = b[kgb * p.n + col]; }
            }
            tile_b[kb][cb] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk = kk + 1u) {
            let a0 = tile_a[kk][lid.y + 0u];
            let a1 = tile_a[kk][lid.y + 16u];
            let a2 = tile_a[kk][lid.y + 32u];
            let a3 = tile_a[kk][lid.y + 48u];
            let a4 = tile_a[kk][lid.y + 64u];
            let a5 = tile_a[kk][lid.y + 80u];
            let a6 = tile_a[kk][lid.y + 96u];
            let a7 = tile_a[kk][lid.y + 112u];
            let b0 = vec4<f32>(tile_b[kk][lid.x], tile_b[kk][lid.x + 16u], tile_b[kk][lid.x + 32u], tile_b[kk][lid.x + 48u]);
            let b1 = vec4<f32>(tile_b[kk][lid.x + 64u], tile_b[kk][lid.x + 80u], tile_b[kk][lid.x + 96u], tile_b[kk][lid.x + 112u]);
            acc[0] = acc[0] + a0 * b0;
            acc[1] = acc[1] + a0 * b1;
            acc[2] = acc[2] + a1 * b0;
            acc[3] = acc[3] + a1 * b1;
            acc[4] = acc[4] + a2 * b0;
            acc[5] = acc[5] + a2 * b1;
            acc[6] = acc[6] + a3 * b0;
            acc[7] = acc[7] + a3 * b1;
            acc[8] = acc[8] + a4 * b0;
            acc[9] = acc[9] + a4 * b1;
            acc[10] = acc[10] + a5 * b0;
            acc[11] = acc[11] + a5 * b1;
            acc[12] = acc[12] + a6 * b0;
            acc[13] = acc[13] + a6 * b1;
            acc[14] = acc[14] + a7 * b0;
            acc[15] = acc[15] + a7 * b1;
        }
        workgroupBarrier();
    }
    // Written back with constant indices only, so that acc stays in registers.
    let beta_on = p.splits == 1u && p.beta != 0.0;
    let row0 = row_base + lid.y + 0u;
    if (row0 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[0].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[0].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[0].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[0].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[1].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[1].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[1].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row0 * p.n + col;
                var v = acc[1].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row1 = row_base + lid.y + 16u;
    if (row1 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[2].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[2].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[2].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[2].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[3].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[3].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[3].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row1 * p.n + col;
                var v = acc[3].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row2 = row_base + lid.y + 32u;
    if (row2 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[4].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[4].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[4].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[4].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[5].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[5].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[5].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row2 * p.n + col;
                var v = acc[5].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row3 = row_base + lid.y + 48u;
    if (row3 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[6].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[6].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[6].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[6].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[7].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[7].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[7].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row3 * p.n + col;
                var v = acc[7].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row4 = row_base + lid.y + 64u;
    if (row4 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[8].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[8].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[8].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[8].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[9].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[9].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[9].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row4 * p.n + col;
                var v = acc[9].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row5 = row_base + lid.y + 80u;
    if (row5 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[10].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[10].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[10].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[10].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[11].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[11].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[11].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row5 * p.n + col;
                var v = acc[11].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row6 = row_base + lid.y + 96u;
    if (row6 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[12].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[12].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[12].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[12].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[13].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[13].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[13].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row6 * p.n + col;
                var v = acc[13].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
    let row7 = row_base + lid.y + 112u;
    if (row7 < p.m) {
        {
            let col = col_base + lid.x + 0u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[14].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 16u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[14].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 32u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[14].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 48u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[14].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 64u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[15].x;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 80u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[15].y;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 96u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[15].z;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
        {
            let col = col_base + lid.x + 112u;
            if (col < p.n) {
                let at = slice + row7 * p.n + col;
                var v = acc[15].w;
                if (beta_on) { v = v + p.beta * c[at]; }
                c[at] = v;
            }
        }
    }
}
