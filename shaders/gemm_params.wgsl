// gemm_params.wgsl (fragment, included by the GEMM kernels with `//#include gemm_params B=<type of B>`): the
// parameters and the operand bindings every GEMM kernel shares; see gemm.wgsl for their meaning. B is f32, or f16
// for the f16 path's weights (gemm_f16.wgsl, gemm_coop.wgsl).

struct GemmParams {
    m: u32,
    n: u32,
    k: u32,
    ta: u32,
    tb: u32,
    beta: f32,
    kc: u32,      // k per slice (= k when not split)
    splits: u32,  // slices of k (1 = not split)
    bias: u32,    // the epilogue (gemm_epilogue.wgsl): 1 = add bias[col] to each value of C, then act
    act: u32,     // the epilogue's activation (activation.wgsl)
    pad0: u32,
    pad1: u32,
}

@group(0) @binding(0) var<uniform> p: GemmParams;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<{{B}}>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
