//! Kernel parameters as data: one `#[repr(C)]` [`bytemuck::Pod`] struct per WGSL parameter struct (binding 0 of
//! every kernel), with the WGSL struct's name and fields. A test compares each with the WGSL struct's layout as
//! naga reflects it, so the host and the kernel cannot disagree about an offset.

/// A kernel's uniform parameters.
pub trait KernelParams: bytemuck::Pod {
    /// The name of the WGSL struct these mirror.
    const WGSL: &'static str;
    /// (field, byte offset) in declaration order.
    fn layout() -> Vec<(&'static str, usize)>;
    /// What the profiler adds to the kernel's name (shapes), when there is something to say.
    fn describe(&self) -> String {
        String::new()
    }
}

/// The layout of a parameter struct, as the registry keeps it.
#[derive(Debug, Clone, Copy)]
pub struct ParamsInfo {
    pub name: &'static str,
    pub layout: fn() -> Vec<(&'static str, usize)>,
    pub size: usize,
}

impl ParamsInfo {
    pub fn of<P: KernelParams>() -> ParamsInfo {
        ParamsInfo { name: P::WGSL, layout: P::layout, size: std::mem::size_of::<P>() }
    }
}

macro_rules! kernel_params {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $(pub $field: $ty),*
        }

        impl $name {
            /// The field names and offsets, in order.
            pub fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*]
            }
        }
    };
}

kernel_params!(
    /// gemm*.wgsl: `op(A)` m×k, `op(B)` k×n, transposes, `beta`, the k slices of a split-k product, and the
    /// epilogue (gemm_epilogue.wgsl: `bias` 1 adds the bias, then the activation `act`).
    GemmParams {
        m: u32,
        n: u32,
        k: u32,
        ta: u32,
        tb: u32,
        beta: f32,
        kc: u32,
        splits: u32,
        bias: u32,
        act: u32,
        pad0: u32,
        pad1: u32,
    }
);
kernel_params!(
    /// softmax_xent.wgsl.
    SoftmaxParams { rows: u32, cols: u32, pad0: u32, pad1: u32 }
);
kernel_params!(
    /// embedding_bag.wgsl: bags (forward) or segments (backward), the row width, mean pooling.
    BagParams { count: u32, dim: u32, mean: u32, pad0: u32 }
);
kernel_params!(
    /// elementwise.wgsl: a rows × cols matrix, the activation's code, rows per chunk of the chunked column sums.
    EwParams { rows: u32, cols: u32, act: u32, chunk: u32 }
);
kernel_params!(
    /// optim.wgsl: Adam (its bias corrections in the device's step state) and SGD with momentum.
    OptParams {
        len: u32,
        pad0: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        momentum: f32,
    }
);
kernel_params!(
    /// optim.wgsl `adam_tick`: advance Adam's step state (`set_t` 0), or set it to step `set_t`.
    TickParams { beta1: f32, beta2: f32, set_t: u32, pad0: u32 }
);
kernel_params!(
    /// sparse.wgsl: X is rows × cols, B has k columns.
    SparseParams { rows: u32, cols: u32, k: u32, pad0: u32 }
);
kernel_params!(
    /// ranking.wgsl.
    RankParams { rows: u32, cols: u32, pad0: u32, pad1: u32 }
);
kernel_params!(
    /// neighbors.wgsl: n rows of width dim, k neighbours each.
    NeighborParams { n: u32, dim: u32, k: u32, pad0: u32 }
);

kernel_params!(
    /// sampled.wgsl `sampled_xent`: rows and the candidate columns (cols = count).
    SampledParams { rows: u32, cols: u32, count: u32, pad0: u32 }
);
kernel_params!(
    /// sampled.wgsl `gather`: `count` slices of `width` values, slice j at `idx[j]·outer`, values `inner` apart.
    GatherParams { count: u32, width: u32, outer: u32, inner: u32 }
);
kernel_params!(
    /// optim.wgsl `adam_selected`: the selected slices (count × width), their strides in the parameter and the
    /// gradient, whether the gradient is full-size (indexed as the parameter) or compact, and Adam's settings.
    SelParams {
        count: u32,
        width: u32,
        p_outer: u32,
        p_inner: u32,
        g_outer: u32,
        g_inner: u32,
        by_index: u32,
        pad0: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        pad1: u32,
        pad2: u32,
        pad3: u32,
    }
);

kernel_params!(
    /// optim.wgsl's adamw: the values, the learning rate, the moments' rates, ε, the weight decay, the gradient's
    /// factor (clipping), lr / (1 − β1ᵗ) and √(1 − β2ᵗ).
    AdamWParams {
        len: u32,
        pad0: u32,
        lr: f32,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        grad_scale: f32,
        step_size: f32,
        bc2_sqrt: f32,
        pad1: u32,
        pad2: u32,
    }
);

macro_rules! impl_params {
    ($($name:ident),*) => {
        $(impl KernelParams for $name {
            const WGSL: &'static str = stringify!($name);
            fn layout() -> Vec<(&'static str, usize)> {
                $name::fields()
            }
        })*
    };
}

kernel_params!(
    /// encoder.wgsl: token rows, width, padded sequence length, heads, head width, the pooling mode (or the position
    /// offset), the LayerNorm epsilon (or the attention scale), sequences; in training, a dropout mask (key,
    /// threshold, scale; threshold 0 drops nothing).
    EncoderParams {
        rows: u32,
        cols: u32,
        seq: u32,
        heads: u32,
        head_dim: u32,
        mode: u32,
        eps: f32,
        batch: u32,
        drop_key: u32,
        drop_threshold: u32,
        drop_scale: f32,
        drop_pad: u32,
    }
);

/// Encoder parameters that carry only a dropout mask (none: threshold 0, nothing dropped); the rest to fill in.
pub fn with_dropout(d: Option<crate::backend::Dropout>) -> EncoderParams {
    let (drop_key, drop_threshold, drop_scale) = crate::backend::Dropout::params(d);
    EncoderParams { drop_key, drop_threshold, drop_scale, ..Default::default() }
}

impl_params!(
    AdamWParams,
    EncoderParams,
    SoftmaxParams,
    BagParams,
    EwParams,
    OptParams,
    TickParams,
    SparseParams,
    RankParams,
    NeighborParams,
    SampledParams,
    GatherParams,
    SelParams
);

impl KernelParams for GemmParams {
    const WGSL: &'static str = "GemmParams";
    fn layout() -> Vec<(&'static str, usize)> {
        GemmParams::fields()
    }
    fn describe(&self) -> String {
        let t = |x: u32| if x == 1 { "T" } else { "N" };
        let split = if self.splits > 1 { format!(", k in {} slices", self.splits) } else { String::new() };
        let epilogue = if self.bias == 1 { format!(", + bias, act {}", self.act) } else { String::new() };
        format!(" {}{} {}×{}×{}{split}{epilogue}", t(self.ta), t(self.tb), self.m, self.n, self.k)
    }
}
