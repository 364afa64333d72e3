// gemm_coop.wgsl: the f16 path's products on tensor cores, through wgpu's experimental cooperative matrices:
// C = act(A·op(B) + beta·C + bias) with A in f32 (activations, rounded to f16 as they are staged), B in f16 (a
// dense layer's weights, stored once; N×K when TB, as a Linear layer stores them, else K×N) and every sum in f32
// (f32 accumulators). A workgroup of 128 invocations (four subgroups of 32: the host uses this kernel only where
// the adapter's subgroups are exactly 32 wide) computes a 64×64 tile of C: each subgroup a 32×32 block as 2×2
// 16×16×16 products. Per step of 32 along k, the workgroup stages A's 64×32 and B's 32×64 slices in workgroup memory
// as f16 (zeros past the edges), and the subgroups multiply from there; the results go through workgroup memory
// once more, where the epilogue (gemm_epilogue.wgsl's bias and activation) is applied as each value is stored.
// Every tile is row-major in workgroup memory and read with the row-major loads (coopLoadT / coopStoreT). The
// products' inputs are those of gemm_f16.wgsl (A rounded to f16, B f16), which runs where tensor cores do not.
// Dispatch: (ceil(n / 64), ceil(m / 64), 1); no split k. Runs with wgpu's bounds checks.
//
// Bindings (group 0):
//   0  uniform        GemmParams
//   1  storage, read  a: array<f32>
//   2  storage, read  b: array<f16>
//   3  storage, rw    c: array<f32>
//   5  storage, read  bias: array<f32>      (the epilogue's bias: see gemm_epilogue.wgsl)

enable f16;
enable wgpu_cooperative_matrix;

//#include gemm_params B=f16

// A is always m×k as stored (the host refuses a transposed A); TA is there for the pipelines' override constants.
override TA: bool = false;
override TB: bool = false;

const TILE: u32 = 64u;
const KSTEP: u32 = 32u;
const LANES: u32 = 128u;

var<workgroup> a_tile: array<f16, 2048>;  // 64 rows × 32 k
var<workgroup> b_tile: array<f16, 2048>;  // 32 k × 64 columns
var<workgroup> c_tile: array<f32, 4096>;  // 64 × 64

// Stages A's rows row0.. and B's columns col0.., k from k0, into workgroup memory as f16 (zeros past the edges).
fn stage(lane: u32, row0: u32, col0: u32, k0: u32) {
    for (var e = lane; e < TILE * KSTEP; e = e + LANES) {
        let r = row0 + e / KSTEP;
        let k = k0 + e % KSTEP;
        var v = f16(0.0);
        if (r < p.m && k < p.k) {
            v = f16(a[r * p.k + k]);
        }
        a_tile[e] = v;
    }
    for (var e = lane; e < KSTEP * TILE; e = e + LANES) {
        let k = k0 + e / TILE;
        let col = col0 + e % TILE;
        var v = f16(0.0);
        if (k < p.k && col < p.n) {
            if (TB) {
                v = b[col * p.k + k];
            } else {
                v = b[k * p.n + col];
            }
        }
        b_tile[e] = v;
    }
}

@compute @workgroup_size(128, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    // This invocation's subgroup and its 32×32 block of the tile.
    let sub = lane / 32u;
    let br = (sub / 2u) * 32u;
    let bc = (sub % 2u) * 32u;
    var c00: coop_mat16x16<f32, C>;
    var c01: coop_mat16x16<f32, C>;
    var c10: coop_mat16x16<f32, C>;
    var c11: coop_mat16x16<f32, C>;
    for (var k0 = 0u; k0 < p.k; k0 = k0 + KSTEP) {
        stage(lane, row0, col0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < KSTEP; kk = kk + 16u) {
            // (Every pointer's index is a named value: naga's SPIR-V writer needs it so.)
            let a0_at = br * KSTEP + kk;
            let a1_at = (br + 16u) * KSTEP + kk;
            let b0_at = kk * TILE + bc;
            let b1_at = kk * TILE + bc + 16u;
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[a0_at], KSTEP);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_tile[a1_at], KSTEP);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[b0_at], TILE);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_tile[b1_at], TILE);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    let c00_at = br * TILE + bc;
    let c01_at = br * TILE + bc + 16u;
    let c10_at = (br + 16u) * TILE + bc;
    let c11_at = (br + 16u) * TILE + bc + 16u;
    coopStoreT(c00, &c_tile[c00_at], TILE);
    coopStoreT(c01, &c_tile[c01_at], TILE);
    coopStoreT(c10, &c_tile[c10_at], TILE);
    coopStoreT(c11, &c_tile[c11_at], TILE);
    workgroupBarrier();
    for (var e = lane; e < TILE * TILE; e = e + LANES) {
        let row = row0 + e / TILE;
        let col = col0 + e % TILE;
        if (row < p.m && col < p.n) {
            let at = row * p.n + col;
            var v = c_tile[e];
            if (p.beta != 0.0) {
                v = v + p.beta * c[at];
            }
            c[at] = epilogue(v, col);
        }
    }
}

//#include gemm_epilogue
//#include activation
