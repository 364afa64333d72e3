// neighbors.wgsl: cosine nearest neighbours of every row of x (n × dim), itself excluded, up to 64 per row.
// `normalize` writes unit rows; `top_k` gives each row (one invocation per row) its k best rows in descending cosine,
// ties to the smaller index, scanning rows in order. Dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(n / 64).
//
// Bindings (group 0):
//   0  uniform        NeighborParams { n, dim, k }
//   1  storage, read  x: array<f32>          (n × dim)          normalize
//   2  storage, rw    unit: array<f32>       (n × dim)          normalize writes, top_k reads
//   3  storage, rw    out_idx: array<u32>    (n × k)            top_k
//   4  storage, rw    out_sim: array<f32>    (n × k)            top_k

struct NeighborParams {
    n: u32,
    dim: u32,
    k: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: NeighborParams;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> unit: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_sim: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn normalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let r = gid.x + gid.y * 65535u * 64u;
    if (r >= p.n) {
        return;
    }
    var ss = 0.0;
    for (var c = 0u; c < p.dim; c = c + 1u) {
        let v = x[r * p.dim + c];
        ss = ss + v * v;
    }
    let norm = sqrt(ss);
    for (var c = 0u; c < p.dim; c = c + 1u) {
        var v = x[r * p.dim + c];
        if (norm > 0.0) {
            v = v / norm;
        }
        unit[r * p.dim + c] = v;
    }
}

@compute @workgroup_size(64, 1, 1)
fn top_k(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * 65535u * 64u;
    if (i >= p.n) {
        return;
    }
    var best_sim: array<f32, 64>;
    var best_idx: array<u32, 64>;
    var count = 0u;
    for (var j = 0u; j < p.n; j = j + 1u) {
        if (j == i) {
            continue;
        }
        var s = 0.0;
        for (var c = 0u; c < p.dim; c = c + 1u) {
            s = s + unit[i * p.dim + c] * unit[j * p.dim + c];
        }
        if (count == p.k && !(s > best_sim[p.k - 1u])) {
            continue;
        }
        // Insert after every entry that is at least as large (earlier rows win ties).
        var at = count;
        if (count == p.k) {
            at = p.k - 1u;
        } else {
            count = count + 1u;
        }
        loop {
            if (at == 0u || !(s > best_sim[at - 1u])) {
                break;
            }
            best_sim[at] = best_sim[at - 1u];
            best_idx[at] = best_idx[at - 1u];
            at = at - 1u;
        }
        best_sim[at] = s;
        best_idx[at] = j;
    }
    for (var q = 0u; q < count; q = q + 1u) {
        out_idx[i * p.k + q] = best_idx[q];
        out_sim[i * p.k + q] = best_sim[q];
    }
}
