//! The one registry of WGSL kernels. Each file in `shaders/` holds one kernel family (its header documents the
//! bindings) or a fragment the GEMM kernels include (see `kernel_source`). Each [`Kernel`] is one entry point with
//! its parameter struct; [`Kernel::spec`] is its registry entry. Tests validate every kernel with naga, compare each
//! parameter struct with its WGSL twin, and run every kernel against its CPU twin.
//!
//! Adding an operation: a WGSL file (or an entry point in one), a `Kernel` variant with its `spec` entry, a
//! parameter struct in `params.rs` when it needs a new one, a method in `ops.rs`, the CPU twin in
//! `cpu_kernels.rs`, the `Backend` method on both backends, and its parity test.

use std::borrow::Cow;

use super::kernel_source::{self, Form};
use super::params::{
    BagParams, EncoderParams, EwParams, GatherParams, GemmParams, NeighborParams, OptParams, ParamsInfo, RankParams,
    SampledParams, SelParams, SoftmaxParams, SparseParams, TickParams,
};
use crate::error::{Error, Result};

/// (name, source) of every file under shaders/: kernels and fragments.
pub const FILES: &[(&str, &str)] = &[
    ("gemm_params", include_str!("../../../shaders/gemm_params.wgsl")),
    ("gemm_tile_main", include_str!("../../../shaders/gemm_tile_main.wgsl")),
    ("gemm_tile_load", include_str!("../../../shaders/gemm_tile_load.wgsl")),
    ("gemm_epilogue", include_str!("../../../shaders/gemm_epilogue.wgsl")),
    ("activation", include_str!("../../../shaders/activation.wgsl")),
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
    ("encoder", include_str!("../../../shaders/encoder.wgsl")),
    ("sampled", include_str!("../../../shaders/sampled.wgsl")),
];

/// Every kernel (one WGSL entry point each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kernel {
    /// Register-blocked GEMM (software adapters).
    Gemm,
    /// 64×64 workgroup-memory GEMM (hardware GPUs).
    GemmTiled,
    /// 128×128 workgroup-memory GEMM, 8×8 per invocation (large products on hardware GPUs).
    GemmTiled128,
    /// Adds the k slices of a split-k product.
    GemmReduce,
    SoftmaxXent,
    BagForward,
    BagBackward,
    BiasAct,
    ReluBackward,
    ColumnSums,
    ColumnSumsChunks,
    Adam,
    AdamTick,
    Sgd,
    CsrMul,
    CsrOuter,
    TargetRanks,
    Normalize,
    TopK,
    EmbedLayerNorm,
    AddLayerNorm,
    Attention,
    Pool,
    L2Normalize,
    Gather,
    SampledXent,
    AdamSelected,
}

/// A kernel's registry entry.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// The file under shaders/.
    pub file: &'static str,
    pub entry: &'static str,
    /// Its parameter struct (binding 0).
    pub params: ParamsInfo,
    /// One pipeline per transpose combination (override constants TA, TB).
    pub transposes: bool,
    /// Built without wgpu's injected bounds checks (the GEMMs: see `pipelines.rs` for why that is safe).
    pub trusted: bool,
}

impl Kernel {
    pub const ALL: [Kernel; 27] = [
        Kernel::Gemm,
        Kernel::GemmTiled,
        Kernel::GemmTiled128,
        Kernel::GemmReduce,
        Kernel::SoftmaxXent,
        Kernel::BagForward,
        Kernel::BagBackward,
        Kernel::BiasAct,
        Kernel::ReluBackward,
        Kernel::ColumnSums,
        Kernel::ColumnSumsChunks,
        Kernel::Adam,
        Kernel::AdamTick,
        Kernel::Sgd,
        Kernel::CsrMul,
        Kernel::CsrOuter,
        Kernel::TargetRanks,
        Kernel::Normalize,
        Kernel::TopK,
        Kernel::EmbedLayerNorm,
        Kernel::AddLayerNorm,
        Kernel::Attention,
        Kernel::Pool,
        Kernel::L2Normalize,
        Kernel::Gather,
        Kernel::SampledXent,
        Kernel::AdamSelected,
    ];

    /// The registry entry.
    pub fn spec(self) -> KernelSpec {
        let k = |file, entry, params| KernelSpec { file, entry, params, transposes: false, trusted: false };
        let gemm = |file| KernelSpec {
            file,
            entry: "main",
            params: ParamsInfo::of::<GemmParams>(),
            transposes: true,
            trusted: true,
        };
        match self {
            Kernel::Gemm => gemm("gemm"),
            Kernel::GemmTiled => gemm("gemm_tiled"),
            Kernel::GemmTiled128 => gemm("gemm_tiled128"),
            Kernel::GemmReduce => k("gemm", "reduce_splits", ParamsInfo::of::<GemmParams>()),
            Kernel::SoftmaxXent => k("softmax_xent", "main", ParamsInfo::of::<SoftmaxParams>()),
            Kernel::BagForward => k("embedding_bag", "forward", ParamsInfo::of::<BagParams>()),
            Kernel::BagBackward => k("embedding_bag", "backward", ParamsInfo::of::<BagParams>()),
            Kernel::BiasAct => k("elementwise", "bias_act", ParamsInfo::of::<EwParams>()),
            Kernel::ReluBackward => k("elementwise", "relu_backward", ParamsInfo::of::<EwParams>()),
            Kernel::ColumnSums => k("elementwise", "column_sums", ParamsInfo::of::<EwParams>()),
            Kernel::ColumnSumsChunks => k("elementwise", "column_sums_chunks", ParamsInfo::of::<EwParams>()),
            Kernel::Adam => k("optim", "adam", ParamsInfo::of::<OptParams>()),
            Kernel::AdamTick => k("optim", "adam_tick", ParamsInfo::of::<TickParams>()),
            Kernel::Sgd => k("optim", "sgd", ParamsInfo::of::<OptParams>()),
            Kernel::CsrMul => k("sparse", "csr_mul", ParamsInfo::of::<SparseParams>()),
            Kernel::CsrOuter => k("sparse", "outer", ParamsInfo::of::<SparseParams>()),
            Kernel::TargetRanks => k("ranking", "main", ParamsInfo::of::<RankParams>()),
            Kernel::Normalize => k("neighbors", "normalize", ParamsInfo::of::<NeighborParams>()),
            Kernel::TopK => k("neighbors", "top_k", ParamsInfo::of::<NeighborParams>()),
            Kernel::EmbedLayerNorm => k("encoder", "embed_layernorm", ParamsInfo::of::<EncoderParams>()),
            Kernel::AddLayerNorm => k("encoder", "add_layernorm", ParamsInfo::of::<EncoderParams>()),
            Kernel::Attention => k("encoder", "attention", ParamsInfo::of::<EncoderParams>()),
            Kernel::Pool => k("encoder", "pool", ParamsInfo::of::<EncoderParams>()),
            Kernel::L2Normalize => k("encoder", "l2_normalize", ParamsInfo::of::<EncoderParams>()),
            Kernel::Gather => k("sampled", "gather", ParamsInfo::of::<GatherParams>()),
            Kernel::SampledXent => k("sampled", "sampled_xent", ParamsInfo::of::<SampledParams>()),
            Kernel::AdamSelected => k("optim", "adam_selected", ParamsInfo::of::<SelParams>()),
        }
    }
}

/// A file's text as written (templates unexpanded).
pub fn file(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// The WGSL a kernel file compiles to, its directives expanded (see `kernel_source`).
pub fn source(name: &str, form: Form) -> Result<Cow<'static, str>> {
    let src = file(name).ok_or_else(|| Error::Internal(format!("no kernel file '{name}' registered")))?;
    kernel_source::expand(src, form, file)
}

/// The source a run compiles: [`source`], or with the `kernel-dev` cargo feature `$EMBJOB_SHADER_DIR/<name>.wgsl`
/// when that file exists (for tuning kernels on a GPU machine without rebuilding). Without the feature, a set
/// `EMBJOB_SHADER_DIR` is an error: a release build never compiles kernels from the environment.
pub fn source_for_run(name: &str, form: Form) -> Result<Cow<'static, str>> {
    if let Some(dir) = std::env::var_os("EMBJOB_SHADER_DIR") {
        #[cfg(feature = "kernel-dev")]
        {
            let path = std::path::Path::new(&dir).join(format!("{name}.wgsl"));
            if path.exists() {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| Error::Gpu(format!("{}: {e}", path.display())))?;
                return kernel_source::expand(&text, form, file).map(|s| Cow::Owned(s.into_owned()));
            }
        }
        #[cfg(not(feature = "kernel-dev"))]
        return Err(Error::Gpu(format!(
            "EMBJOB_SHADER_DIR is set ({}), but this build does not swap kernels: build with `--features kernel-dev` \
             to tune kernels, or unset it",
            std::path::Path::new(&dir).display()
        )));
    }
    source(name, form)
}

/// The square output tile a GEMM kernel's workgroup covers: its `const TILE: u32 = …u;` (64 when it declares none).
/// The host sizes the dispatch from it, so a kernel and its dispatch cannot disagree.
pub fn tile_of(src: &str) -> u32 {
    src.lines()
        .find_map(|l| l.trim().strip_prefix("const TILE: u32 = ")?.strip_suffix("u;")?.parse().ok())
        .unwrap_or(64)
}
