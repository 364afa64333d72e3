//! GEMM on the device: `c = op(a)·op(b) + beta·c`, with the kernel chosen by adapter and size and k split into
//! slices for products with few output tiles and a long k. The GEMM kernels run without wgpu's injected bounds
//! checks, so dispatching them takes a `CheckedGemm`, which only `pipelines.rs` makes, from operand lengths that hold
//! the shape (checked arithmetic).

use super::kernels::Kernel;
use super::params::GemmParams;
use super::pipelines::{groups_1d, variant, CheckedGemm};
use super::{GpuBuf, GpuContext};
use crate::backend::{Activation, MatDims};
use crate::error::{Error, Result};

/// The GEMM kernels (same contract, each parity-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    /// shaders/gemm.wgsl: 4×4 register blocks, no workgroup memory (faster on lavapipe).
    Register,
    /// shaders/gemm_tiled.wgsl: 64×64 output tiles from workgroup memory. As the context's choice: this kernel for
    /// products under 2^30 multiply-adds, [`GemmKernel::Tiled128`] for larger ones.
    Tiled,
    /// shaders/gemm_tiled128.wgsl: 128×128 output tiles, 8×8 per invocation (large products on hardware GPUs).
    Tiled128,
    /// shaders/gemm_f16.wgsl: the f16 path without tensor cores (B in f16, A rounded to f16, f32 sums).
    F16,
    /// shaders/gemm_coop.wgsl: the f16 path on tensor cores (cooperative matrices; A not transposed, no split k).
    TensorCores,
}

impl GemmKernel {
    pub fn kernel(self) -> Kernel {
        match self {
            GemmKernel::Register => Kernel::Gemm,
            GemmKernel::Tiled => Kernel::GemmTiled,
            GemmKernel::Tiled128 => Kernel::GemmTiled128,
            GemmKernel::F16 => Kernel::GemmF16,
            GemmKernel::TensorCores => Kernel::GemmCoop,
        }
    }

    /// Whether it takes B in f16 (the f16 path's kernels) rather than f32.
    pub fn f16_weights(self) -> bool {
        matches!(self, GemmKernel::F16 | GemmKernel::TensorCores)
    }
}

/// Products of at least this many multiply-adds use the 128×128 kernel on hardware GPUs (H200: at batch 4096 the
/// model trains 29 % faster with it; at batch 256 the 64×64 kernel's 4× more workgroups train 25 % faster).
const LARGE_GEMM: usize = 1 << 30;

/// The rows a dense layer of the encoder is assumed to have when its kernel is chosen (see
/// [`GpuContext::kernel_for_any_rows`]).
const ROWS_INVARIANT_M: usize = 8192;

/// What a GEMM does to each value of C as it stores it (shaders/gemm_epilogue.wgsl): add `bias[col]` (n values),
/// then the activation. A dense layer's bias and activation thus take no pass of their own over C.
#[derive(Clone, Copy)]
pub(super) struct Epilogue<'a> {
    pub bias: &'a GpuBuf,
    pub act: Activation,
}

/// `x · y`, or `None` when it overflows.
fn product(x: usize, y: usize) -> Option<usize> {
    x.checked_mul(y)
}

impl GpuContext {
    /// The context's kernel for a product of this shape.
    pub(super) fn kernel_for(&self, d: MatDims) -> GemmKernel {
        match self.gemm_kernel {
            GemmKernel::Tiled if d.m.saturating_mul(d.n).saturating_mul(d.k) >= LARGE_GEMM => GemmKernel::Tiled128,
            k => k,
        }
    }

    /// The kernel for a product of `n` columns over `k` whatever its number of rows (the encoder's dense layers):
    /// chosen as for [`ROWS_INVARIANT_M`] rows, the encoder's batch of 8,192 tokens.
    pub(super) fn kernel_for_any_rows(&self, n: usize, k: usize) -> GemmKernel {
        self.kernel_for(MatDims { m: ROWS_INVARIANT_M, n, k })
    }

    /// `c = act(op(a)·op(b) + beta·c + bias)` with a chosen kernel (`epilogue` `None`: no bias, no activation).
    /// Products with few output tiles and a long k (the model's `dlogits·Wᵀ`: 256 × 64 outputs over 6,169 items) split
    /// k into slices that run side by side and add up in a second pass, in a fixed order, so the result still
    /// repeats bit for bit. An error, and nothing dispatched, unless every operand holds its shape.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
        &self,
        kernel: GemmKernel,
        enc: &mut wgpu::CommandEncoder,
        a: (&GpuBuf, bool),
        b: (&GpuBuf, bool),
        c: &GpuBuf,
        d: MatDims,
        beta: f32,
        epilogue: Option<Epilogue<'_>>,
    ) -> Result<()> {
        self.gemm_split(kernel, enc, a, b, c, d, beta, epilogue, true)
    }

    /// [`Self::gemm`] with k never split: each value of C is summed in one pass over k, in the kernel's order, so a
    /// row of C depends on its row of A alone, whatever m is (with a kernel chosen without looking at m).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_unsplit(
        &self,
        kernel: GemmKernel,
        enc: &mut wgpu::CommandEncoder,
        a: (&GpuBuf, bool),
        b: (&GpuBuf, bool),
        c: &GpuBuf,
        d: MatDims,
        epilogue: Option<Epilogue<'_>>,
    ) -> Result<()> {
        self.gemm_split(kernel, enc, a, b, c, d, 0.0, epilogue, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_split(
        &self,
        kernel: GemmKernel,
        enc: &mut wgpu::CommandEncoder,
        (a, ta): (&GpuBuf, bool),
        (b, tb): (&GpuBuf, bool),
        c: &GpuBuf,
        d: MatDims,
        beta: f32,
        epilogue: Option<Epilogue<'_>>,
        may_split: bool,
    ) -> Result<()> {
        let bias_len = epilogue.map(|e| e.bias.len());
        let checked = CheckedGemm::new(a.len(), b.len(), c.len(), bias_len, d)?;
        if a.is_half() || c.is_half() || b.is_half() != kernel.f16_weights() {
            let want = if kernel.f16_weights() { "f16" } else { "f32" };
            return Err(Error::Internal(format!("gemm: the {kernel:?} kernel takes f32 A and C and {want} B")));
        }
        if kernel == GemmKernel::TensorCores && ta {
            return Err(Error::Internal("gemm: the tensor-core kernel takes A as stored".into()));
        }
        let device_has = match kernel {
            GemmKernel::F16 => self.f16,
            GemmKernel::TensorCores => self.tensor_cores.lock().is_ok_and(|t| t.is_ok()),
            _ => true,
        };
        if !device_has {
            return Err(Error::Gpu(format!("the adapter '{}' cannot run the {kernel:?} kernel", self.adapter.name)));
        }
        let tensor_cores = kernel == GemmKernel::TensorCores;
        let kernel = kernel.kernel();
        let tile = self.tile(kernel)?;
        let groups = ((d.n as u32).div_ceil(tile), (d.m as u32).div_ceil(tile));
        let splits = if tensor_cores || !may_split { 1 } else { k_splits(d, tile as usize) };
        let params = |beta: f32, kc: usize, splits: usize| GemmParams {
            m: d.m as u32,
            n: d.n as u32,
            k: d.k as u32,
            ta: ta.into(),
            tb: tb.into(),
            beta,
            kc: kc as u32,
            splits: splits as u32,
            bias: epilogue.is_some().into(),
            act: epilogue.map_or(0, |e| e.act.code()),
            ..Default::default()
        };
        // Binding 5 is the bias; without one, A stands in (read-only both times, never read there).
        let bias = epilogue.map_or(a.buffer(), |e| e.bias.buffer());
        if splits > 1 {
            let kc = d.k.div_ceil(splits);
            let splits = d.k.div_ceil(kc);
            // The scratch holds splits × m × n values (m × n fits: checked above; splits ≤ 64).
            if let Some(scratch) = product(splits, d.m * d.n).and_then(|len| self.scratch(len)) {
                let entries = [(1, a.buffer()), (2, b.buffer()), (3, &scratch), (5, bias)];
                let p = params(0.0, kc, splits);
                let g = (groups.0, groups.1, splits as u32);
                self.dispatch_checked(&checked, enc, kernel, variant(ta, tb), &p, &entries, g)?;
                let p = params(beta, kc, splits);
                let entries = [(3, c.buffer()), (4, &scratch), (5, bias)];
                return self.dispatch(enc, Kernel::GemmReduce, 0, &p, &entries, groups_1d(d.m * d.n));
            }
        }
        let entries = [(1, a.buffer()), (2, b.buffer()), (3, c.buffer()), (5, bias)];
        let p = params(beta, d.k, 1);
        self.dispatch_checked(&checked, enc, kernel, variant(ta, tb), &p, &entries, (groups.0, groups.1, 1))
    }

    /// A GEMM kernel's dispatch: the trusted ones (no injected bounds checks) with the proof of their operands'
    /// check, the others (the f16 path's) as any kernel.
    #[allow(clippy::too_many_arguments)]
    fn dispatch_checked(
        &self,
        checked: &CheckedGemm,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        variant: u8,
        p: &GemmParams,
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        if kernel.spec().trusted {
            self.dispatch_trusted(checked, enc, kernel, variant, p, entries, groups)
        } else {
            self.dispatch(enc, kernel, variant, p, entries, groups)
        }
    }
}

/// How many slices of k a product runs in: enough for about 256 workgroups when its output tiles (`tile` square)
/// are fewer than 128 (a large GPU has about that many cores), each slice at least 256 long. A function of the
/// shape and the kernel only, the same on every adapter.
fn k_splits(d: MatDims, tile: usize) -> usize {
    let tiles = d.m.div_ceil(tile) * d.n.div_ceil(tile);
    if tiles >= 128 || d.k < 1024 {
        return 1;
    }
    (256 / tiles).clamp(1, d.k / 256).min(64)
}
