// sparse.wgsl: products with a CSR matrix X (n×p) for PCA, in f32: X·B, and XXᵀ / XᵀX by merging sorted index
// lists (XᵀX takes the CSR of Xᵀ). One invocation per output element; sums run in index order.
// Invocation index = gid.x + gid.y · 65535 · 64; dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(outputs / 64).
//
// Bindings (group 0):
//   0  uniform        SparseParams { rows, cols, k }   (rows × cols is X; k is the width of B)
//   1  storage, read  indptr: array<u32>   (rows + 1)
//   2  storage, read  indices: array<u32>
//   3  storage, read  values: array<f32>
//   4  storage, read  dense: array<f32>    csr_mul: B (cols × k)
//   5  storage, rw    out: array<f32>      csr_mul: rows × k; outer: rows × rows

struct SparseParams {
    rows: u32,
    cols: u32,
    k: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: SparseParams;
@group(0) @binding(1) var<storage, read> indptr: array<u32>;
@group(0) @binding(2) var<storage, read> indices: array<u32>;
@group(0) @binding(3) var<storage, read> values: array<f32>;
@group(0) @binding(4) var<storage, read> dense: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn csr_mul(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.rows * p.k) {
        return;
    }
    let r = idx / p.k;
    let c = idx % p.k;
    var s = 0.0;
    for (var j = indptr[r]; j < indptr[r + 1u]; j = j + 1u) {
        s = s + values[j] * dense[indices[j] * p.k + c];
    }
    out[idx] = s;
}

@compute @workgroup_size(64, 1, 1)
fn outer(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.rows * p.rows) {
        return;
    }
    let a = idx / p.rows;
    let b = idx % p.rows;
    var i = indptr[a];
    var j = indptr[b];
    let ie = indptr[a + 1u];
    let je = indptr[b + 1u];
    var s = 0.0;
    loop {
        if (i >= ie || j >= je) {
            break;
        }
        let ci = indices[i];
        let cj = indices[j];
        if (ci == cj) {
            s = s + values[i] * values[j];
            i = i + 1u;
            j = j + 1u;
        } else if (ci < cj) {
            i = i + 1u;
        } else {
            j = j + 1u;
        }
    }
    out[idx] = s;
}
