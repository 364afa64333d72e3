//! [`Gpu`]: the [`Backend`] contract on wgpu. Tensors live on the device for as long as the backend does; each
//! operation records its dispatch into one pending command encoder, which is submitted only when the host needs a
//! result (`read`) or before new data is written, so a training step's dispatches share one encoder.
//!
//! PCA's products run in f32 on the device (f64 on the host before and after). The cosine neighbour search runs on
//! the device up to 64 neighbours per item, on the host beyond.

use std::sync::{Mutex, MutexGuard};

use super::{GpuBuf, GpuContext, GpuIdx};
use crate::backend::cpu_kernels;
use crate::backend::{AdamStep, Backend, Bags, Indices, MatDims, Tensor};
use crate::dense::Matrix;
use crate::error::{Error, Result};
use crate::sparse::Csr;

/// The wgpu backend.
pub struct Gpu {
    ctx: GpuContext,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    f: Vec<GpuBuf>,
    u: Vec<GpuIdx>,
    pending: Option<wgpu::CommandEncoder>,
}

impl Gpu {
    /// The backend on an opened device.
    pub fn new(ctx: GpuContext) -> Gpu {
        Gpu { ctx, state: Mutex::new(State::default()) }
    }

    /// The device and its adapter.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn state(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::Internal("gpu backend: state poisoned by a panic".into()))
    }

    fn flush(&self, st: &mut State) {
        if let Some(enc) = st.pending.take() {
            self.ctx.submit(enc);
        }
    }

    /// Records into the pending encoder.
    fn record(&self, f: impl FnOnce(&GpuContext, &State, &mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut st = self.state()?;
        let mut enc = st.pending.take().unwrap_or_else(|| self.ctx.encoder());
        let r = f(&self.ctx, &st, &mut enc);
        st.pending = Some(enc);
        r
    }

    /// Runs one host-side product: uploads, records, submits and reads back.
    fn one_shot(
        &self,
        out_len: usize,
        what: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder, &GpuBuf) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let out = self.ctx.upload(&vec![0.0; out_len]).map_err(|e| name_tensor(e, what))?;
        {
            let mut st = self.state()?;
            self.flush(&mut st);
        }
        let mut enc = self.ctx.encoder();
        f(&mut enc, &out)?;
        self.ctx.submit(enc);
        self.ctx.download(&out)
    }

    fn upload_csr(&self, x: &Csr) -> Result<(GpuIdx, GpuIdx, GpuBuf)> {
        let indptr: Vec<u32> = x.indptr.iter().map(|&v| v as u32).collect();
        let values: Vec<f32> = x.values.iter().map(|&v| v as f32).collect();
        Ok((self.ctx.upload_idx(&indptr)?, self.ctx.upload_idx(&x.indices)?, self.ctx.upload(&values)?))
    }
}

fn name_tensor(e: Error, what: &str) -> Error {
    match e {
        Error::Gpu(m) => Error::Gpu(format!("{what}: {m}")),
        e => e,
    }
}

fn f32s(m: &Matrix) -> Vec<f32> {
    m.data().iter().map(|&v| v as f32).collect()
}

fn f64_matrix(rows: usize, cols: usize, v: Vec<f32>) -> Result<Matrix> {
    Matrix::from_vec(rows, cols, v.into_iter().map(f64::from).collect())
}

impl State {
    fn f(&self, t: Tensor) -> Result<&GpuBuf> {
        self.f.get(t.id).ok_or_else(|| Error::Internal(format!("gpu backend: no tensor {}", t.id)))
    }
    fn u(&self, t: Indices) -> Result<&GpuIdx> {
        self.u.get(t.id).ok_or_else(|| Error::Internal(format!("gpu backend: no index buffer {}", t.id)))
    }
}

impl Backend for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn profile_report(&self) -> Option<String> {
        if let Ok(mut st) = self.state() {
            self.flush(&mut st);
        }
        self.ctx.profile_report()
    }

    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols(), a.rows()) } else { (a.rows(), a.cols()) };
        let (k2, n) = if tb { (b.cols(), b.rows()) } else { (b.rows(), b.cols()) };
        if k != k2 {
            return Err(Error::Internal(format!("gemm: inner dimensions differ ({k} vs {k2})")));
        }
        let (ga, gb) = (self.ctx.upload(&f32s(a))?, self.ctx.upload(&f32s(b))?);
        let out = self.one_shot(m * n, "gemm output", |enc, c| {
            self.ctx.matmul(enc, &ga, ta, &gb, tb, c, MatDims { m, n, k }, 0.0)
        })?;
        f64_matrix(m, n, out)
    }

    fn gram_csr(&self, x: &Csr) -> Result<Matrix> {
        // XᵀX = (Xᵀ)(Xᵀ)ᵀ: the row products of the transpose.
        let xt = crate::backend::cpu::transpose(x);
        let csr = self.upload_csr(&xt)?;
        let p = x.cols;
        let out = self.one_shot(p * p, "covariance (XᵀX)", |enc, o| {
            self.ctx.csr_outer(enc, p, x.rows, (&csr.0, &csr.1, &csr.2), o);
            Ok(())
        })?;
        f64_matrix(p, p, out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        let csr = self.upload_csr(x)?;
        let n = x.rows;
        let out = self.one_shot(n * n, "Gram matrix (XXᵀ)", |enc, o| {
            self.ctx.csr_outer(enc, n, x.cols, (&csr.0, &csr.1, &csr.2), o);
            Ok(())
        })?;
        f64_matrix(n, n, out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        if x.cols != b.rows() {
            return Err(Error::Internal(format!("csr_mul: inner dimensions differ ({} vs {})", x.cols, b.rows())));
        }
        let csr = self.upload_csr(x)?;
        let gb = self.ctx.upload(&f32s(b))?;
        let out = self.one_shot(x.rows * b.cols(), "sparse product", |enc, o| {
            self.ctx.csr_mul(enc, x.rows, x.cols, (&csr.0, &csr.1, &csr.2), &gb, b.cols(), o);
            Ok(())
        })?;
        f64_matrix(x.rows, b.cols(), out)
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        self.csr_mul(&crate::backend::cpu::transpose(x), b)
    }

    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        let buf = self.ctx.upload(data)?;
        let mut st = self.state()?;
        st.f.push(buf);
        Ok(Tensor { id: st.f.len() - 1, len: data.len() })
    }

    fn write(&self, t: Tensor, data: &[f32]) -> Result<()> {
        let mut st = self.state()?;
        self.flush(&mut st);
        let b = st.f(t)?;
        if b.len < data.len() {
            return Err(Error::Internal(format!("gpu backend: write of {} values into {}", data.len(), b.len)));
        }
        self.ctx.write_f32(b, data);
        Ok(())
    }

    fn read(&self, t: Tensor) -> Result<Vec<f32>> {
        let mut st = self.state()?;
        self.flush(&mut st);
        self.ctx.download(st.f(t)?)
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        let buf = self.ctx.upload_idx(&vec![0; capacity.max(1)])?;
        let mut st = self.state()?;
        st.u.push(GpuIdx { buf: buf.buf, len: capacity });
        Ok(Indices { id: st.u.len() - 1, len: 0 })
    }

    fn write_indices(&self, t: Indices, data: &[u32]) -> Result<Indices> {
        let mut st = self.state()?;
        self.flush(&mut st);
        let b = st.u(t)?;
        if data.len() > b.len {
            return Err(Error::Internal(format!("gpu backend: {} indices into a buffer of {}", data.len(), b.len)));
        }
        self.ctx.write_u32(b, data);
        Ok(Indices { id: t.id, len: data.len() })
    }

    fn copy(&self, src: Tensor, src_offset: usize, dst: Tensor, dst_offset: usize, len: usize) -> Result<()> {
        self.record(|_, st, enc| {
            let (a, b) = (st.f(src)?, st.f(dst)?);
            if src_offset + len > a.len || dst_offset + len > b.len {
                return Err(Error::Internal("copy: range outside a tensor".into()));
            }
            if len > 0 {
                enc.copy_buffer_to_buffer(&a.buf, src_offset as u64 * 4, &b.buf, dst_offset as u64 * 4, len as u64 * 4);
            }
            Ok(())
        })
    }

    fn matmul(&self, a: Tensor, ta: bool, b: Tensor, tb: bool, c: Tensor, dims: MatDims, beta: f32) -> Result<()> {
        self.record(|ctx, st, enc| ctx.matmul(enc, st.f(a)?, ta, st.f(b)?, tb, st.f(c)?, dims, beta))
    }

    fn embedding_bag(&self, table: Tensor, dim: usize, bags: &Bags, mean: bool, out: Tensor) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.embedding_bag(
                enc,
                st.f(table)?,
                dim,
                (st.u(bags.items)?, st.u(bags.offsets)?, st.f(bags.weights)?),
                bags.bags,
                mean,
                st.f(out)?,
            );
            Ok(())
        })
    }

    fn embedding_bag_backward(
        &self,
        d_pooled: Tensor,
        dim: usize,
        bags: &Bags,
        mean: bool,
        grad: Tensor,
    ) -> Result<()> {
        self.record(|ctx, st, enc| {
            let seg = GpuIdx { buf: st.u(bags.seg_items)?.buf.clone(), len: bags.seg_items.len };
            ctx.embedding_bag_backward(
                enc,
                st.f(d_pooled)?,
                dim,
                (st.u(bags.offsets)?, st.f(bags.weights)?),
                (&seg, st.u(bags.seg_offsets)?, st.u(bags.seg_examples)?, st.f(bags.seg_weights)?),
                mean,
                st.f(grad)?,
            );
            Ok(())
        })
    }

    fn bias_act(&self, x: Tensor, bias: Tensor, rows: usize, cols: usize, relu: bool) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.bias_act(enc, st.f(x)?, st.f(bias)?, rows, cols, relu);
            Ok(())
        })
    }

    fn relu_backward(&self, grad: Tensor, activation: Tensor) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.relu_backward(enc, st.f(grad)?, st.f(activation)?);
            Ok(())
        })
    }

    fn column_sums(&self, x: Tensor, rows: usize, cols: usize, out: Tensor) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.column_sums(enc, st.f(x)?, rows, cols, st.f(out)?);
            Ok(())
        })
    }

    fn softmax_xent(&self, logits: Tensor, targets: Indices, rows: usize, cols: usize, losses: Tensor) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.softmax_xent(enc, st.f(logits)?, st.u(targets)?, rows, cols, st.f(losses)?);
            Ok(())
        })
    }

    fn adam(&self, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: AdamStep) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.adam(enc, st.f(param)?, st.f(grad)?, st.f(m)?, st.f(v)?, step);
            Ok(())
        })
    }

    fn sgd(
        &self,
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.sgd(enc, st.f(param)?, st.f(grad)?, st.f(velocity)?, lr, momentum, weight_decay);
            Ok(())
        })
    }

    fn target_ranks(
        &self,
        scores: Tensor,
        rows: usize,
        cols: usize,
        targets: Indices,
        mask_items: Indices,
        mask_offsets: Indices,
        ranks: Tensor,
    ) -> Result<()> {
        self.record(|ctx, st, enc| {
            ctx.target_ranks(
                enc,
                st.f(scores)?,
                rows,
                cols,
                st.u(targets)?,
                st.u(mask_items)?,
                st.u(mask_offsets)?,
                st.f(ranks)?,
            );
            Ok(())
        })
    }

    fn cosine_top_k(&self, x: Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        if k <= GpuContext::MAX_NEIGHBORS {
            let mut st = self.state()?;
            self.flush(&mut st);
            return self.ctx.cosine_top_k(st.f(x)?, n, dim, k);
        }
        // More neighbours than the kernel keeps per row: rank on the host.
        let table = self.read(x)?;
        Ok(cpu_kernels::cosine_top_k(&table[..n * dim], n, dim, k))
    }
}
