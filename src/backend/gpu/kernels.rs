//! Every WGSL kernel, registered in one place. Each file in `shaders/` holds one kernel family; its header comment
//! documents the bindings. A test parses and validates each with naga.

/// (name, WGSL source) of every kernel family.
pub const SHADERS: &[(&str, &str)] = &[
    ("gemm", include_str!("../../../shaders/gemm.wgsl")),
    ("gemm_tiled", include_str!("../../../shaders/gemm_tiled.wgsl")),
    ("gemm_tiled128", include_str!("../../../shaders/gemm_tiled128.wgsl")),
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

/// The source a run compiles: the registered one, or `$EMBJOB_SHADER_DIR/<name>.wgsl` when that variable is set and
/// the file exists (for tuning kernels on a GPU machine without rebuilding; never set in tests or CI).
pub fn source_for_run(name: &str) -> crate::error::Result<std::borrow::Cow<'static, str>> {
    if let Some(dir) = std::env::var_os("EMBJOB_SHADER_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{name}.wgsl"));
        if path.exists() {
            return std::fs::read_to_string(&path)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| crate::error::Error::Gpu(format!("{}: {e}", path.display())));
        }
    }
    source(name)
        .map(std::borrow::Cow::Borrowed)
        .ok_or_else(|| crate::error::Error::Internal(format!("no kernel '{name}' registered")))
}

/// The square output tile a GEMM kernel's workgroup covers: its `const TILE: u32 = …u;` (64 when it declares none).
/// The host sizes the dispatch from it, so a kernel and its dispatch cannot disagree.
pub fn tile_of(src: &str) -> u32 {
    src.lines()
        .find_map(|l| l.trim().strip_prefix("const TILE: u32 = ")?.strip_suffix("u;")?.parse().ok())
        .unwrap_or(64)
}
