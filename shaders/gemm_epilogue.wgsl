// gemm_epilogue.wgsl (fragment, included last by every GEMM kernel with `//#include gemm_epilogue`, followed by
// `//#include activation`): what a GEMM does to each value of C as it stores it, so a dense layer's bias and
// activation take no pass of their own over C.

@group(0) @binding(5) var<storage, read> bias: array<f32>;
// The epilogue: with p.bias == 1, each value v of column `col` of C is stored as activate(v + bias[col], p.act), so
// C = act(op(A)·op(B) + beta·C + bias); with p.bias == 0, v as it is. A split product's slices are stored as they
// are and `reduce_splits` applies it to their sum. Binding 5 holds the bias (n values; the host binds A there when
// there is none, never read then).
fn epilogue(v: f32, col: u32) -> f32 {
    if (p.splits != 1u) {
        return v;
    }
    return bias_act(v, col);
}

fn bias_act(v: f32, col: u32) -> f32 {
    if (p.bias == 0u) {
        return v;
    }
    return activate(v + bias[col], p.act);
}
