//! Every WGSL kernel, registered in one place. Each file in `shaders/` holds one kernel family; its header comment
//! documents the bindings. A test parses and validates each with naga.

/// (name, WGSL source) of every kernel family.
pub const SHADERS: &[(&str, &str)] = &[
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    ("softmax_xent", include_str!("../../../shaders/softmax_xent.wgsl")),
    ("embedding_bag", include_str!("../../../shaders/embedding_bag.wgsl")),
    ("elementwise", include_str!("../../../shaders/elementwise.wgsl")),
    ("optim", include_str!("../../../shaders/optim.wgsl")),
    ("sparse", include_str!("../../../shaders/sparse.wgsl")),
    ("ranking", include_str!("../../../shaders/ranking.wgsl")),
    ("neighbors", include_str!("../../../shaders/neighbors.wgsl")),
];

/// The source of a registered kernel family.
pub fn source(name: &str) -> Option<&'static str> {
    SHADERS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
