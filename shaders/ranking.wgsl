// ranking.wgsl: the rank of each row's target among its candidates, 1 + #{j unmasked : s[j] > s[target]}, where
// row r masks mask_items[mask_offsets[r] .. mask_offsets[r+1]] (the target itself is never masked).
// One 64-wide workgroup per row: each invocation counts every 64th column, the counts add up in workgroup memory
// (integers: exact in any order), then invocation 0 takes the masked items back out.
// Dispatch (min(rows, 65535), ceil(rows / 65535), 1).
//
// Bindings (group 0):
//   0  uniform        RankParams { rows, cols }
//   1  storage, read  scores: array<f32>        (rows × cols)
//   2  storage, read  targets: array<u32>
//   3  storage, read  mask_items: array<u32>
//   4  storage, read  mask_offsets: array<u32>  (rows + 1)
//   5  storage, rw    ranks: array<f32>         (rows)

struct RankParams {
    rows: u32,
    cols: u32,
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: RankParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read> mask_items: array<u32>;
@group(0) @binding(4) var<storage, read> mask_offsets: array<u32>;
@group(0) @binding(5) var<storage, read_write> ranks: array<f32>;

var<workgroup> counts: array<u32, 64>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    // Uniform control flow: every invocation of a workgroup has the same r.
    if (r >= p.rows) {
        return;
    }
    let base = r * p.cols;
    let t = targets[r];
    let st = scores[base + t];
    var higher = 0u;
    for (var j = lid.x; j < p.cols; j = j + 64u) {
        if (scores[base + j] > st) {
            higher = higher + 1u;
        }
    }
    counts[lid.x] = higher;
    workgroupBarrier();
    for (var half = 32u; half > 0u; half = half / 2u) {
        if (lid.x < half) {
            counts[lid.x] = counts[lid.x] + counts[lid.x + half];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        var total = counts[0];
        for (var q = mask_offsets[r]; q < mask_offsets[r + 1u]; q = q + 1u) {
            let mi = mask_items[q];
            if (mi != t && scores[base + mi] > st) {
                total = total - 1u;
            }
        }
        ranks[r] = f32(total + 1u);
    }
}
