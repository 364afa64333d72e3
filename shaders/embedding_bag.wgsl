// embedding_bag.wgsl: weighted gather-and-pool over bags (forward) and its gradient as a segment sum (backward).
// Mean pooling divides by the bag's total weight (its size when every weight is 1).
// No atomics: the backward pass gets each item's occurrences grouped (seg_items / seg_offsets / seg_examples, built
// on the host per batch), and one invocation sums one (item, dimension) in a fixed order.
// Invocation index = gid.x + gid.y · 65535 · 64; dispatch (min(w, 65535), ceil(w / 65535), 1), w = ceil(n / 64).
//
// Bindings (group 0), forward:
//   0  uniform        BagParams { count = bags, dim, mean }
//   1  storage, read  table: array<f32>        (V × dim)
//   2  storage, read  items: array<u32>        (bag members, concatenated)
//   3  storage, read  offsets: array<u32>      (bags + 1)
//   4  storage, rw    pooled: array<f32>       (bags × dim)
//  10  storage, read  weights: array<f32>      (one per bag member; 1 when unweighted)
// backward:
//   0  uniform        BagParams { count = segments, dim, mean }
//   3  storage, read  offsets: array<u32>
//   5  storage, read  d_pooled: array<f32>     (bags × dim)
//   6  storage, read  seg_items: array<u32>
//   7  storage, read  seg_offsets: array<u32>  (segments + 1)
//   8  storage, read  seg_examples: array<u32>
//   9  storage, rw    grad: array<f32>         (V × dim, cleared before the dispatch)
//  10  storage, read  weights: array<f32>      (one per bag member, for the mean's normaliser)
//  11  storage, read  seg_weights: array<f32>  (the weight of each occurrence, in segment order)

struct BagParams {
    count: u32,
    dim: u32,
    mean: u32,
    pad0: u32,
}

@group(0) @binding(0) var<uniform> p: BagParams;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> items: array<u32>;
@group(0) @binding(3) var<storage, read> offsets: array<u32>;
@group(0) @binding(4) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(5) var<storage, read> d_pooled: array<f32>;
@group(0) @binding(6) var<storage, read> seg_items: array<u32>;
@group(0) @binding(7) var<storage, read> seg_offsets: array<u32>;
@group(0) @binding(8) var<storage, read> seg_examples: array<u32>;
@group(0) @binding(9) var<storage, read_write> grad: array<f32>;
@group(0) @binding(10) var<storage, read> weights: array<f32>;
@group(0) @binding(11) var<storage, read> seg_weights: array<f32>;

fn bag_weight(r: u32) -> f32 {
    var w = 0.0;
    for (var j = offsets[r]; j < offsets[r + 1u]; j = j + 1u) {
        w = w + weights[j];
    }
    return w;
}

@compute @workgroup_size(64, 1, 1)
fn forward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.count * p.dim) {
        return;
    }
    let r = idx / p.dim;
    let c = idx % p.dim;
    let lo = offsets[r];
    let hi = offsets[r + 1u];
    var s = 0.0;
    for (var j = lo; j < hi; j = j + 1u) {
        s = s + weights[j] * table[items[j] * p.dim + c];
    }
    let total = bag_weight(r);
    if (p.mean == 1u && total > 0.0) {
        s = s * (1.0 / total);
    }
    pooled[idx] = s;
}

@compute @workgroup_size(64, 1, 1)
fn backward(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.x + gid.y * 65535u * 64u;
    if (idx >= p.count * p.dim) {
        return;
    }
    let s = idx / p.dim;
    let c = idx % p.dim;
    var acc = 0.0;
    for (var j = seg_offsets[s]; j < seg_offsets[s + 1u]; j = j + 1u) {
        let e = seg_examples[j];
        var scale = seg_weights[j];
        if (p.mean == 1u) {
            scale = seg_weights[j] * (1.0 / bag_weight(e));
        }
        acc = acc + d_pooled[e * p.dim + c] * scale;
    }
    grad[seg_items[s] * p.dim + c] = acc;
}
