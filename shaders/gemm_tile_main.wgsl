// gemm_tile_main.wgsl (fragment, included by gemm_tiled.wgsl and gemm_tiled128.wgsl with
// `//#include gemm_tile_main TILE=… ACC=…`): the workgroup-memory tiles, the entry point of a 16×16 workgroup that
// covers TILE×TILE of C with ACC vec4 accumulators per invocation, its k slice, and the head of the loop over k.

var<workgroup> tile_a: array<array<f32, {{TILE}}>, 16>;  // [k][row]
var<workgroup> tile_b: array<array<f32, {{TILE}}>, 16>;  // [k][col]

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row_base = wid.y * {{TILE}}u;
    let col_base = wid.x * {{TILE}}u;
    let t = lid.y * 16u + lid.x;
    var acc: array<vec4<f32>, {{ACC}}>;
    let k_begin = wid.z * p.kc;
    let k_end = min(p.k, k_begin + p.kc);
    let slice = wid.z * p.m * p.n;
    for (var k0 = k_begin; k0 < k_end; k0 = k0 + 16u) {
