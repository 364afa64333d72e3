//! The one registry of WGSL kernels. Each file in `shaders/` holds one kernel family (its header documents the
//! bindings) or a fragment the GEMM kernels include (see `kernel_source`). Each [`Kernel`] is one entry point with
//! its parameter struct; [`Kernel::spec`] is its registry entry. Tests validate every kernel with naga, compare each
//! parameter struct with its WGSL twin, and run every kernel against its CPU twin.
//!
//! Adding an operation: its entry point in a WGSL file, one line in the [`kernels!`] table below (a parameter
//! struct in `params.rs` only when it needs a new one), the method in its family's trait (`backend/ops.rs`), the
//! CPU twin and the CPU method in `backend/cpu/`, the GPU method in `backend/gpu/<family>_ops.rs`, and its parity
//! test, written once for every backend (tests/embjob/backend_ops.rs).

use std::borrow::Cow;

use super::kernel_source::{self, Form};
use super::params::{
    AdamWParams, BagParams, EncoderParams, EwParams, GatherParams, GemmParams, NeighborParams, OptParams, ParamsInfo,
    RankParams, SampledParams, SelParams, SoftmaxParams, SparseParams, TickParams,
};
use crate::error::{Error, Result};

/// (name, source) of every file under shaders/: kernels and fragments, one name each.
macro_rules! kernel_files {
    ($($name:ident),* $(,)?) => {
        pub const FILES: &[(&str, &str)] =
            &[$((stringify!($name), include_str!(concat!("../../../shaders/", stringify!($name), ".wgsl")))),*];
    };
}

kernel_files!(
    gemm_params,
    gemm_tile_main,
    gemm_tile_load,
    gemm_epilogue,
    activation,
    dropout,
    gemm,
    gemm_tiled,
    gemm_tiled128,
    softmax_xent,
    embedding_bag,
    elementwise,
    optim,
    sparse,
    ranking,
    neighbors,
    encoder,
    encoder_grad,
    sampled,
    gemm_f16,
    gemm_coop,
);

/// The table of kernels: one line each, `Variant => "file", "entry point", ParamsStruct`, then its flags: `gemm` (a
/// pipeline per transpose combination, built without injected bounds checks), `transposes` (a pipeline per
/// transpose combination, with bounds checks), `f16` (needs the `SHADER_F16` feature), `coop` (needs cooperative
/// matrices). From it come the [`Kernel`] enum, [`Kernel::ALL`] and [`Kernel::spec`].
macro_rules! kernels {
    ($($(#[$doc:meta])* $name:ident => $file:literal, $entry:literal, $params:ty $(, $flag:ident)*;)*) => {
        /// Every kernel (one WGSL entry point each).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kernel {
            $($(#[$doc])* $name,)*
        }

        impl Kernel {
            /// Every kernel, in the table's order.
            pub const ALL: &'static [Kernel] = &[$(Kernel::$name,)*];

            /// The registry entry.
            pub fn spec(self) -> KernelSpec {
                match self {
                    $(Kernel::$name => {
                        let flags: &[&str] = &[$(stringify!($flag)),*];
                        let gemm = flags.contains(&"gemm");
                        KernelSpec {
                            file: $file,
                            entry: $entry,
                            params: ParamsInfo::of::<$params>(),
                            transposes: gemm || flags.contains(&"transposes"),
                            trusted: gemm,
                            f16: flags.contains(&"f16") || flags.contains(&"coop"),
                            coop: flags.contains(&"coop"),
                        }
                    })*
                }
            }
        }
    };
}

kernels! {
    /// Register-blocked GEMM (software adapters).
    Gemm => "gemm", "main", GemmParams, gemm;
    /// 64×64 workgroup-memory GEMM (hardware GPUs).
    GemmTiled => "gemm_tiled", "main", GemmParams, gemm;
    /// 128×128 workgroup-memory GEMM, 8×8 per invocation (large products on hardware GPUs).
    GemmTiled128 => "gemm_tiled128", "main", GemmParams, gemm;
    /// Adds the k slices of a split-k product.
    GemmReduce => "gemm", "reduce_splits", GemmParams;
    SoftmaxXent => "softmax_xent", "main", SoftmaxParams;
    BagForward => "embedding_bag", "forward", BagParams;
    BagBackward => "embedding_bag", "backward", BagParams;
    BiasAct => "elementwise", "bias_act", EwParams;
    ReluBackward => "elementwise", "relu_backward", EwParams;
    ColumnSums => "elementwise", "column_sums", EwParams;
    ColumnSumsChunks => "elementwise", "column_sums_chunks", EwParams;
    Adam => "optim", "adam", OptParams;
    AdamTick => "optim", "adam_tick", TickParams;
    Sgd => "optim", "sgd", OptParams;
    CsrMul => "sparse", "csr_mul", SparseParams;
    CsrOuter => "sparse", "outer", SparseParams;
    TargetRanks => "ranking", "main", RankParams;
    Normalize => "neighbors", "normalize", NeighborParams;
    TopK => "neighbors", "top_k", NeighborParams;
    EmbedLayerNorm => "encoder", "embed_layernorm", EncoderParams;
    AddLayerNorm => "encoder", "add_layernorm", EncoderParams;
    Attention => "encoder", "attention", EncoderParams;
    Pool => "encoder", "pool", EncoderParams;
    L2Normalize => "encoder", "l2_normalize", EncoderParams;
    Gather => "sampled", "gather", GatherParams;
    SampledXent => "sampled", "sampled_xent", SampledParams;
    AdamSelected => "optim", "adam_selected", SelParams;
    /// The f16 path's products without tensor cores (B in f16, A rounded to f16, sums in f32).
    GemmF16 => "gemm_f16", "main", GemmParams, gemm, f16;
    /// The f16 path's products on tensor cores (cooperative matrices).
    GemmCoop => "gemm_coop", "main", GemmParams, transposes, coop;
    EmbedSum => "encoder", "embed_sum", EncoderParams;
    LayerNormKeep => "encoder_grad", "layernorm_keep", EncoderParams;
    LayerNormBackward => "encoder_grad", "layernorm_backward", EncoderParams;
    ActForward => "encoder_grad", "act_forward", EncoderParams;
    ActBackward => "encoder_grad", "act_backward", EncoderParams;
    AttentionBackwardQ => "encoder_grad", "attention_backward_q", EncoderParams;
    AttentionBackwardKv => "encoder_grad", "attention_backward_kv", EncoderParams;
    PoolBackward => "encoder_grad", "pool_backward", EncoderParams;
    L2NormalizeBackward => "encoder_grad", "l2_normalize_backward", EncoderParams;
    ScaleValues => "encoder_grad", "scale_values", EncoderParams;
    SumSquares => "encoder_grad", "sum_squares", EncoderParams;
    Dropout => "encoder_grad", "dropout", EncoderParams;
    AdamW => "optim", "adamw", AdamWParams;
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
    /// Uses f16 (`enable f16;`): compiled only on a device with the `SHADER_F16` feature.
    pub f16: bool,
    /// Uses cooperative matrices (`enable wgpu_cooperative_matrix;`): compiled only on a device with them.
    pub coop: bool,
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
