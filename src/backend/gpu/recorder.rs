//! [`Gpu`]: an opened device and the command encoder its operations record into. A resident tensor owns its device
//! buffer (freed with its last handle); each operation records its dispatch into one pending command encoder, which
//! is submitted only when the host needs a result (`read`) or before new data is written, so a training step's
//! dispatches share one encoder. The operation families are implemented on it in `linalg_ops.rs`,
//! `tensor_store.rs`, `model_ops.rs` and `encoder_ops.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::adapter::AdapterReport;
use super::context::TensorCores;
use super::gemm::{Epilogue, GemmKernel};
use super::kernels::Kernel;
use super::params::TickParams;
use super::{GpuBuf, GpuContext, GpuIdx};
use crate::backend::{
    check_distinct, Activation, AdamStep, Backend, BackendKind, F16Support, Indices, MatDims, Tensor,
};
use crate::error::{Error, Result};
use crate::linalg::dense::Matrix;
use crate::linalg::sparse::Csr;

/// The wgpu backend.
pub struct Gpu {
    ctx: GpuContext,
    /// The encoder the next operations record into.
    pending: Mutex<Option<wgpu::CommandEncoder>>,
    /// Adam's step state on the device and the (step, β1, β2) it was last advanced to.
    adam_state: Mutex<Option<(GpuBuf, AdamKey)>>,
}

/// (step, β1 bits, β2 bits).
type AdamKey = (u32, u32, u32);

/// A resident tensor's buffer. Dropping it tells the context's bind-group cache to let go of its buffers.
pub(super) struct Resident<B> {
    pub(super) buf: B,
    released: Arc<AtomicU64>,
}

impl<B> Drop for Resident<B> {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }
}

/// A tensor's device buffer.
/// A tensor's device buffer of f32 values: every operand but a product's B (see [`operand`]) must be f32.
pub(super) fn buf(t: &Tensor) -> Result<&GpuBuf> {
    let b = operand(t)?;
    if b.is_half() {
        return Err(Error::Internal(
            "gpu: an f16 tensor where f32 values are needed (only a product's B is f16)".into(),
        ));
    }
    Ok(b)
}

/// A tensor's device buffer, f32 or f16 (a product's B operand).
pub(super) fn operand(t: &Tensor) -> Result<&GpuBuf> {
    Ok(&t.storage::<Resident<GpuBuf>>("gpu")?.buf)
}

/// A tensor's `wgpu` buffer, to bind.
pub(super) fn bind(t: &Tensor) -> Result<&wgpu::Buffer> {
    Ok(buf(t)?.buffer())
}

/// An index buffer with its used length.
pub(super) fn idx(t: &Indices) -> Result<GpuIdx> {
    Ok(t.storage::<Resident<GpuIdx>>("gpu")?.buf.with_len(t.len()))
}

impl Gpu {
    /// Opens an adapter: the one whose name contains `name` when given, else a hardware GPU, else (only when
    /// `allow_software`) a software adapter such as lavapipe. `Ok(None)` when none fits.
    pub fn open(name: Option<&str>, allow_software: bool) -> Result<Option<Gpu>> {
        let ctx = GpuContext::open(name, allow_software)?;
        Ok(ctx.map(|ctx| Gpu { ctx, pending: Mutex::new(None), adam_state: Mutex::new(None) }))
    }

    /// The adapter it runs on.
    pub fn adapter(&self) -> &AdapterReport {
        &self.ctx.adapter
    }

    /// The largest tensor a kernel can bind, in bytes (the adapter's storage-binding and buffer limits).
    pub fn binding_limit(&self) -> u64 {
        self.ctx.binding_limit()
    }

    /// The GEMM kernel this adapter uses for products under 2^30 multiply-adds.
    pub fn gemm_kernel(&self) -> GemmKernel {
        self.ctx.gemm_kernel
    }

    /// [`crate::backend::ModelOps::matmul`] (with `bias`, [`crate::backend::ModelOps::matmul_bias_act`] plus beta)
    /// on a chosen GEMM kernel, so that tests compare every kernel with the CPU on any adapter: `c = act(op(a)·op(b)
    /// + beta·c + bias)`. Checked like every other operation.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_using(
        &self,
        kernel: GemmKernel,
        (a, ta): (&Tensor, bool),
        (b, tb): (&Tensor, bool),
        c: &Tensor,
        dims: MatDims,
        beta: f32,
        bias: Option<(&Tensor, Activation)>,
    ) -> Result<()> {
        let operands: Vec<&Tensor> = [a, b].into_iter().chain(bias.map(|(t, _)| t)).collect();
        check_distinct(BackendKind::Gpu, &[c], &operands)?;
        self.record(|ctx, enc| {
            let epilogue = match bias {
                Some((t, act)) => Some(Epilogue { bias: buf(t)?, act }),
                None => None,
            };
            ctx.gemm(kernel, enc, (buf(a)?, ta), (operand(b)?, tb), buf(c)?, dims, beta, epilogue)
        })
    }

    /// The kernel of a product whose B is f16: the tensor-core kernel where the device has it (checked against the
    /// f16 kernel on first use; `ta`: it takes A as stored), else the f16 kernel; an error without f16 shaders.
    pub(super) fn f16_kernel(&self, ta: bool) -> Result<GemmKernel> {
        if !ta && self.tensor_cores()?.is_ok() {
            return Ok(GemmKernel::TensorCores);
        }
        if self.ctx.f16 {
            Ok(GemmKernel::F16)
        } else {
            Err(Error::Gpu(format!("the adapter '{}' has no f16 shaders", self.ctx.adapter.name)))
        }
    }

    /// Whether the f16 path's products run on tensor cores (cooperative matrices), or why not. On a device that
    /// offers them, the first call checks the tensor-core kernel against the f16 kernel on products with edges in
    /// every direction and both layouts of B; a kernel that disagrees is not used (and the reason says so).
    pub fn tensor_cores(&self) -> Result<std::result::Result<(), String>> {
        let mut state = self.ctx.tensor_cores.lock().map_err(|_| Error::Internal("gpu: tensor-core state".into()))?;
        if let Ok(TensorCores::Unchecked) = *state {
            *state = match self.check_tensor_cores() {
                Ok(()) => Ok(TensorCores::Checked),
                Err(why) => Err(format!("the tensor-core kernel disagreed with the f16 kernel on this adapter: {why}")),
            };
        }
        Ok(state.as_ref().map(|_| ()).map_err(Clone::clone))
    }

    /// gemm_coop against gemm_f16 on 70×50×40 (edges past every tile) and 130×96×300 (several steps along k), B
    /// as K×N and as N×K, with a bias and GELU: relative differences under 1e-3 (the same f16 inputs and f32 sums,
    /// in other orders).
    fn check_tensor_cores(&self) -> std::result::Result<(), String> {
        let text = |e: Error| e.to_string();
        for (m, n, k) in [(70usize, 50usize, 40usize), (130, 96, 300)] {
            for tb in [false, true] {
                let mut x = 0x2545_f491_4f6c_dd1du64;
                let mut next = |scale: f32| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                };
                let (a, b, bias): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                    (0..m * k).map(|_| next(2.0)).collect(),
                    (0..k * n).map(|_| next(2.0)).collect(),
                    (0..n).map(|_| next(1.0)).collect(),
                );
                let ga = self.ctx.upload(&a).map_err(text)?;
                let gb = self.ctx.upload_f16(&b).map_err(text)?;
                let gbias = self.ctx.upload(&bias).map_err(text)?;
                let d = MatDims { m, n, k };
                let mut results = Vec::new();
                for kernel in [GemmKernel::TensorCores, GemmKernel::F16] {
                    let c = self.ctx.zeros(m * n).map_err(text)?;
                    let mut enc = self.ctx.encoder();
                    let epilogue = Some(Epilogue { bias: &gbias, act: Activation::Gelu });
                    self.ctx.gemm(kernel, &mut enc, (&ga, false), (&gb, tb), &c, d, 0.0, epilogue).map_err(text)?;
                    self.ctx.submit(enc);
                    results.push(self.ctx.download(&c).map_err(text)?);
                }
                let scale = results[1].iter().fold(1e-3f32, |s, v| s.max(v.abs()));
                let worst = results[0].iter().zip(&results[1]).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                if worst.is_nan() || worst > 1e-3 * scale {
                    return Err(format!(
                        "{m}×{n}×{k}, B {}: largest difference {worst} (values up to {scale})",
                        if tb { "N×K" } else { "K×N" }
                    ));
                }
            }
        }
        Ok(())
    }

    /// Submits what was recorded and waits until the device has done it (benchmarks time whole operations).
    pub fn finish(&self) -> Result<()> {
        self.flush()?;
        self.ctx
            .device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map(|_| ())
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))
    }

    pub(super) fn ctx(&self) -> &GpuContext {
        &self.ctx
    }

    fn pending(&self) -> Result<MutexGuard<'_, Option<wgpu::CommandEncoder>>> {
        self.pending.lock().map_err(|_| Error::Internal("gpu backend: state poisoned by a panic".into()))
    }

    /// Submits what was recorded.
    pub(super) fn flush(&self) -> Result<()> {
        if let Some(enc) = self.pending()?.take() {
            self.ctx.submit(enc);
        }
        Ok(())
    }

    /// Records into the pending encoder.
    pub(super) fn record(&self, f: impl FnOnce(&GpuContext, &mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut pending = self.pending()?;
        let mut enc = pending.take().unwrap_or_else(|| self.ctx.encoder());
        let r = f(&self.ctx, &mut enc);
        *pending = Some(enc);
        r
    }

    /// Records `f` with Adam's device-side step state for `step`: the first parameter of an optimizer step advances
    /// the state; the others of the same step reuse it. The next step is one dispatch with the same parameters
    /// every step; a jump (a new run) sets the step.
    pub(super) fn with_adam_state(
        &self,
        step: AdamStep,
        f: impl FnOnce(&GpuContext, &mut wgpu::CommandEncoder, &GpuBuf) -> Result<()>,
    ) -> Result<()> {
        let mut state =
            self.adam_state.lock().map_err(|_| Error::Internal("gpu backend: adam state poisoned".into()))?;
        if state.is_none() {
            *state = Some((self.ctx.upload(&[0.0; 4])?, (0, 0, 0)));
        }
        let (buffer, seen) = state.as_mut().ok_or_else(|| Error::Internal("adam state".into()))?;
        let key = (step.t, step.beta1.to_bits(), step.beta2.to_bits());
        if *seen != key {
            let next = seen.0.checked_add(1) == Some(step.t) && (seen.1, seen.2) == (key.1, key.2);
            let set_t = if next { 0 } else { step.t };
            self.record(|ctx, enc| {
                let p = TickParams { beta1: step.beta1, beta2: step.beta2, set_t, pad0: 0 };
                ctx.dispatch(enc, Kernel::AdamTick, 0, &p, &[(5, buffer.buffer())], (1, 1, 1))
            })?;
            *seen = key;
        }
        self.record(|ctx, enc| f(ctx, enc, buffer))
    }

    pub(super) fn resident<B>(&self, buf: B) -> Resident<B> {
        Resident { buf, released: self.ctx.pipelines.released.clone() }
    }

    /// Runs one host-side product: uploads, records, submits and reads back.
    pub(super) fn one_shot(
        &self,
        out_len: usize,
        what: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder, &GpuBuf) -> Result<()>,
    ) -> Result<Vec<f32>> {
        // The size is checked before the zeros are made (a shape's product saturates rather than wraps).
        self.ctx.check_size(what, out_len).map_err(|e| name_tensor(e, what))?;
        let out = self.ctx.upload(&vec![0.0; out_len]).map_err(|e| name_tensor(e, what))?;
        self.flush()?;
        let mut enc = self.ctx.encoder();
        f(&mut enc, &out)?;
        self.ctx.submit(enc);
        self.ctx.download(&out)
    }

    pub(super) fn upload_csr(&self, x: &Csr) -> Result<(GpuIdx, GpuIdx, GpuBuf)> {
        let indptr: Vec<u32> = x.indptr.iter().map(|&v| v as u32).collect();
        let values: Vec<f32> = x.values.iter().map(|&v| v as f32).collect();
        Ok((self.ctx.upload_idx(&indptr)?, self.ctx.upload_idx(&x.indices)?, self.ctx.upload(&values)?))
    }
}

pub(super) fn name_tensor(e: Error, what: &str) -> Error {
    match e {
        Error::Gpu(m) => Error::Gpu(format!("{what}: {m}")),
        e => e,
    }
}

pub(super) fn f32s(m: &Matrix) -> Vec<f32> {
    m.data().iter().map(|&v| v as f32).collect()
}

pub(super) fn f64_matrix(rows: usize, cols: usize, v: Vec<f32>) -> Result<Matrix> {
    Matrix::from_vec(rows, cols, v.into_iter().map(f64::from).collect())
}

impl Backend for Gpu {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn f16_support(&self) -> Result<F16Support> {
        let name = &self.ctx.adapter.name;
        if !self.ctx.f16 {
            return Ok(F16Support::None(format!("the adapter '{name}' has no f16 shaders")));
        }
        Ok(match self.tensor_cores()? {
            Ok(()) => F16Support::TensorCores(format!("'{name}'")),
            Err(why) => F16Support::Kernels(format!("{why} ('{name}')")),
        })
    }

    fn profile_report(&self) -> Option<String> {
        self.flush().ok()?;
        self.ctx.profile_report()
    }
}
