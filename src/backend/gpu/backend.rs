//! [`Gpu`]: the [`Backend`] contract on wgpu. A resident tensor owns its device buffer (freed with its last handle);
//! each operation records its dispatch into one pending command encoder, which is submitted only when the host
//! needs a result (`read`) or before new data is written, so a training step's dispatches share one encoder.
//!
//! PCA's products run in f32 on the device (f64 on the host before and after). The cosine neighbour search runs on
//! the device up to 64 neighbours per item, on the host beyond.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::gemm::Epilogue;
use super::ops::GpuCsr;
use super::params::SelParams;
use super::{GpuBuf, GpuContext, GpuIdx};
use crate::backend::cpu_kernels;
use crate::backend::{
    check_distinct, Activation, AdamStep, AttentionShape, Backend, BackendKind, Bags, EmbeddingTables, Indices,
    LayerNorm, MatDims, PoolMode, RankMasks, SampledColumns, Selected, SeqShape, SgdStep, Tensor, TokenRows,
};
use crate::linalg::dense::Matrix;
use crate::error::{Error, Result};
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
struct Resident<B> {
    buf: B,
    released: Arc<AtomicU64>,
}

impl<B> Drop for Resident<B> {
    fn drop(&mut self) {
        self.released.fetch_add(1, Ordering::Relaxed);
    }
}

fn buf(t: &Tensor) -> Result<&GpuBuf> {
    Ok(&t.storage::<Resident<GpuBuf>>("gpu")?.buf)
}

/// An index buffer with its used length.
fn idx(t: &Indices) -> Result<GpuIdx> {
    let b = &t.storage::<Resident<GpuIdx>>("gpu")?.buf;
    Ok(GpuIdx { buf: b.buf.clone(), len: t.len() })
}

impl Gpu {
    /// The backend on an opened device.
    pub fn new(ctx: GpuContext) -> Gpu {
        Gpu { ctx, pending: Mutex::new(None), adam_state: Mutex::new(None) }
    }

    /// The device and its adapter.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    fn pending(&self) -> Result<MutexGuard<'_, Option<wgpu::CommandEncoder>>> {
        self.pending.lock().map_err(|_| Error::Internal("gpu backend: state poisoned by a panic".into()))
    }

    /// Submits what was recorded.
    fn flush(&self) -> Result<()> {
        if let Some(enc) = self.pending()?.take() {
            self.ctx.submit(enc);
        }
        Ok(())
    }

    /// Records into the pending encoder.
    fn record(&self, f: impl FnOnce(&GpuContext, &mut wgpu::CommandEncoder) -> Result<()>) -> Result<()> {
        let mut pending = self.pending()?;
        let mut enc = pending.take().unwrap_or_else(|| self.ctx.encoder());
        let r = f(&self.ctx, &mut enc);
        *pending = Some(enc);
        r
    }

    /// Records `f` with Adam's device-side step state for `step`: the first parameter of an optimizer step advances
    /// the state; the others of the same step reuse it. The next step is one dispatch with the same parameters
    /// every step; a jump (a new run) sets the step.
    fn with_adam_state(
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
            self.record(|ctx, enc| ctx.adam_tick(enc, buffer, step.beta1, step.beta2, set_t))?;
            *seen = key;
        }
        self.record(|ctx, enc| f(ctx, enc, buffer))
    }

    fn resident<B>(&self, buf: B) -> Resident<B> {
        Resident { buf, released: self.ctx.pipelines.released.clone() }
    }

    /// Runs one host-side product: uploads, records, submits and reads back.
    fn one_shot(
        &self,
        out_len: usize,
        what: &str,
        f: impl FnOnce(&mut wgpu::CommandEncoder, &GpuBuf) -> Result<()>,
    ) -> Result<Vec<f32>> {
        let out = self.ctx.upload(&vec![0.0; out_len]).map_err(|e| name_tensor(e, what))?;
        self.flush()?;
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

fn csr(c: &(GpuIdx, GpuIdx, GpuBuf)) -> GpuCsr<'_> {
    (&c.0, &c.1, &c.2)
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

impl Backend for Gpu {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn profile_report(&self) -> Option<String> {
        self.flush().ok()?;
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
        let c = self.upload_csr(&xt)?;
        let p = x.cols;
        let out =
            self.one_shot(p * p, "covariance (XᵀX)", |enc, o| self.ctx.csr_outer(enc, p, x.rows, csr(&c), o))?;
        f64_matrix(p, p, out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        let c = self.upload_csr(x)?;
        let n = x.rows;
        let out =
            self.one_shot(n * n, "Gram matrix (XXᵀ)", |enc, o| self.ctx.csr_outer(enc, n, x.cols, csr(&c), o))?;
        f64_matrix(n, n, out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        if x.cols != b.rows() {
            return Err(Error::Internal(format!("csr_mul: inner dimensions differ ({} vs {})", x.cols, b.rows())));
        }
        let c = self.upload_csr(x)?;
        let gb = self.ctx.upload(&f32s(b))?;
        let out = self.one_shot(x.rows * b.cols(), "sparse product", |enc, o| {
            self.ctx.csr_mul(enc, x.rows, x.cols, csr(&c), &gb, b.cols(), o)
        })?;
        f64_matrix(x.rows, b.cols(), out)
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        self.csr_mul(&crate::backend::cpu::transpose(x), b)
    }

    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        let b = self.ctx.upload(data)?;
        Ok(Tensor::new(data.len(), self.resident(b)))
    }

    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.flush()?;
        self.ctx.write_f32(buf(t)?, data)
    }

    fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.flush()?;
        self.ctx.download(buf(t)?)
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        let mut b = self.ctx.upload_idx(&vec![0; capacity.max(1)])?;
        b.len = capacity;
        Ok(Indices::new(capacity, self.resident(b)))
    }

    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()> {
        self.flush()?;
        self.ctx.write_u32(&t.storage::<Resident<GpuIdx>>("gpu")?.buf, data)?;
        t.set_len(data.len());
        Ok(())
    }

    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dst], &[src])?;
        let (a, b) = (buf(src)?, buf(dst)?);
        if src_offset + len > a.len || dst_offset + len > b.len {
            return Err(Error::Internal("copy: range outside a tensor".into()));
        }
        self.record(|_, enc| {
            if len > 0 {
                enc.copy_buffer_to_buffer(&a.buf, src_offset as u64 * 4, &b.buf, dst_offset as u64 * 4, len as u64 * 4);
            }
            Ok(())
        })
    }

    fn matmul(&self, a: &Tensor, ta: bool, b: &Tensor, tb: bool, c: &Tensor, dims: MatDims, beta: f32) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[c], &[a, b])?;
        self.record(|ctx, enc| ctx.matmul(enc, buf(a)?, ta, buf(b)?, tb, buf(c)?, dims, beta))
    }

    fn matmul_bias_act(
        &self,
        a: &Tensor,
        ta: bool,
        b: &Tensor,
        tb: bool,
        c: &Tensor,
        dims: MatDims,
        bias: &Tensor,
        act: Activation,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[c], &[a, b, bias])?;
        self.record(|ctx, enc| {
            let epilogue = Epilogue { bias: buf(bias)?, act };
            ctx.matmul_bias_act(enc, buf(a)?, ta, buf(b)?, tb, buf(c)?, dims, epilogue)
        })
    }

    fn embedding_bag(&self, table: &Tensor, dim: usize, bags: &Bags<'_>, mean: bool, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[table, bags.weights])?;
        let members = (&idx(bags.items)?, &idx(bags.offsets)?, buf(bags.weights)?);
        self.record(|ctx, enc| ctx.embedding_bag(enc, buf(table)?, dim, members, bags.bags, mean, buf(out)?))
    }

    fn embedding_bag_backward(
        &self,
        d_pooled: &Tensor,
        dim: usize,
        bags: &Bags<'_>,
        mean: bool,
        grad: &Tensor,
        zero_others: bool,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[grad], &[d_pooled, bags.weights, bags.seg_weights])?;
        let (offsets, weights) = (idx(bags.offsets)?, buf(bags.weights)?);
        let (seg_items, seg_offsets, seg_examples) =
            (idx(bags.seg_items)?, idx(bags.seg_offsets)?, idx(bags.seg_examples)?);
        let segments = (&seg_items, &seg_offsets, &seg_examples, buf(bags.seg_weights)?);
        self.record(|ctx, enc| {
            let n = bags.seg_items.len();
            let d = buf(d_pooled)?;
            ctx.embedding_bag_backward(enc, d, dim, (&offsets, weights), segments, n, mean, buf(grad)?, zero_others)
        })
    }

    fn bias_act(&self, x: &Tensor, bias: &Tensor, rows: usize, cols: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[x], &[bias])?;
        if x.len() < rows * cols || bias.len() < cols {
            return Err(Error::Internal("bias_act: shape".into()));
        }
        self.record(|ctx, enc| ctx.bias_act(enc, buf(x)?, buf(bias)?, rows, cols, act))
    }

    fn relu_backward(&self, grad: &Tensor, activation: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[grad], &[activation])?;
        self.record(|ctx, enc| ctx.relu_backward(enc, buf(grad)?, buf(activation)?, grad.len()))
    }

    fn column_sums(&self, x: &Tensor, rows: usize, cols: usize, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[x])?;
        self.record(|ctx, enc| ctx.column_sums(enc, buf(x)?, rows, cols, buf(out)?))
    }

    fn softmax_xent(
        &self,
        logits: &Tensor,
        targets: &Indices,
        rows: usize,
        cols: usize,
        losses: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[logits, losses], &[])?;
        let targets = idx(targets)?;
        self.record(|ctx, enc| ctx.softmax_xent(enc, buf(logits)?, &targets, rows, cols, buf(losses)?))
    }

    fn adam(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, step: AdamStep) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, m, v], &[grad])?;
        self.with_adam_state(step, |ctx, enc, state| {
            ctx.adam(enc, buf(param)?, buf(grad)?, buf(m)?, buf(v)?, state, step)
        })
    }

    fn gather(&self, src: &Tensor, ix: &Indices, width: usize, stride: (usize, usize), dst: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dst], &[src])?;
        let count = ix.len();
        if dst.len() < count * width {
            return Err(Error::Internal("gather: a short destination".into()));
        }
        let u = |x: usize| u32::try_from(x).map_err(|_| Error::Internal("gather: stride".into()));
        let shape = (u(width)?, u(stride.0)?, u(stride.1)?);
        let ix = idx(ix)?;
        self.record(|ctx, enc| ctx.gather(enc, buf(src)?, &ix, count, shape, buf(dst)?))
    }

    fn sampled_softmax_xent(
        &self,
        logits: &Tensor,
        rows: usize,
        c: &SampledColumns<'_>,
        losses: &Tensor,
        bias_grad: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[logits, losses, bias_grad], &[c.bias, c.log_q, c.shared])?;
        c.check_lengths(rows, logits, losses, bias_grad)?;
        let n = c.count;
        let targets = idx(c.targets)?;
        let columns = (buf(c.bias)?, buf(c.log_q)?, buf(c.shared)?, &targets);
        self.record(|ctx, enc| ctx.sampled_xent(enc, buf(logits)?, rows, n, columns, buf(losses)?))?;
        self.column_sums(logits, rows, n, bias_grad)
    }

    fn adam_selected(
        &self,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        sel: &Selected<'_>,
        step: AdamStep,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, m, v], &[grad])?;
        let count = sel.idx.len();
        let u = |x: usize| u32::try_from(x).map_err(|_| Error::Internal("adam_selected: stride".into()));
        let shape = SelParams {
            width: u(sel.width)?,
            p_outer: u(sel.param_stride.0)?,
            p_inner: u(sel.param_stride.1)?,
            g_outer: u(sel.grad_stride.0)?,
            g_inner: u(sel.grad_stride.1)?,
            by_index: sel.grad_by_index.into(),
            ..SelParams::default()
        };
        let ix = idx(sel.idx)?;
        self.with_adam_state(step, |ctx, enc, state| {
            ctx.adam_selected(enc, (buf(param)?, buf(grad)?, buf(m)?, buf(v)?), state, &ix, count, shape, step)
        })
    }

    fn sgd(&self, param: &Tensor, grad: &Tensor, velocity: &Tensor, s: SgdStep) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, velocity], &[grad])?;
        self.record(|ctx, enc| ctx.sgd(enc, buf(param)?, buf(grad)?, buf(velocity)?, s.lr, s.momentum, s.weight_decay))
    }

    fn target_ranks(
        &self,
        scores: &Tensor,
        rows: usize,
        cols: usize,
        masks: &RankMasks<'_>,
        ranks: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[ranks], &[scores])?;
        let (t, mi, mo) = (idx(masks.targets)?, idx(masks.mask_items)?, idx(masks.mask_offsets)?);
        self.record(|ctx, enc| ctx.target_ranks(enc, buf(scores)?, rows, cols, &t, &mi, &mo, buf(ranks)?))
    }

    fn cosine_top_k(&self, x: &Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        if k <= GpuContext::MAX_NEIGHBORS {
            self.flush()?;
            return self.ctx.cosine_top_k(buf(x)?, n, dim, k);
        }
        // More neighbours than the kernel keeps per row: rank on the host.
        let table = self.read(x)?;
        cpu_kernels::cosine_top_k(&table[..n * dim], n, dim, k)
    }

    fn embed_layernorm(&self, e: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[e.word, e.position, e.token_type, e.ln.gamma, e.ln.beta])?;
        let rows = tokens.ids.len();
        // The kernel indexes the tables by id, type and position: all are checked here, on the host.
        if tokens.type_ids.len() != rows || out.len() < rows * e.cols || e.ln.gamma.len() != e.cols {
            return Err(Error::Internal("embed_layernorm: shape".into()));
        }
        let last_pos = rows.min(tokens.seq).max(1) - 1 + e.position_offset;
        if (last_pos + 1) * e.cols > e.position.len() {
            return Err(Error::Internal("embed_layernorm: a position outside the table".into()));
        }
        let (ids, type_ids) = (idx(tokens.ids)?, idx(tokens.type_ids)?);
        let tables = (buf(e.word)?, buf(e.position)?, buf(e.token_type)?);
        let ln = (buf(e.ln.gamma)?, buf(e.ln.beta)?, e.ln.eps);
        let shape = (rows, e.cols, tokens.seq, e.position_offset);
        self.record(|ctx, enc| ctx.embed_layernorm(enc, (&ids, &type_ids), tables, ln, shape, buf(out)?))
    }

    fn add_layernorm(&self, x: &Tensor, residual: &Tensor, rows: usize, ln: &LayerNorm<'_>) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[x], &[residual, ln.gamma, ln.beta])?;
        let cols = ln.gamma.len();
        if x.len() < rows * cols || residual.len() < rows * cols || ln.beta.len() != cols {
            return Err(Error::Internal("add_layernorm: shape".into()));
        }
        let p = (buf(ln.gamma)?, buf(ln.beta)?, ln.eps);
        self.record(|ctx, enc| ctx.add_layernorm(enc, buf(x)?, buf(residual)?, p, rows, cols))
    }

    fn attention(&self, qkv: &Tensor, lens: &Indices, s: AttentionShape, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[qkv])?;
        let h = s.heads * s.head_dim;
        if qkv.len() < s.batch * s.seq * 3 * h || out.len() < s.batch * s.seq * h || lens.len() < s.batch {
            return Err(Error::Internal("attention: shape".into()));
        }
        let lens = idx(lens)?;
        self.record(|ctx, enc| ctx.attention(enc, buf(qkv)?, &lens, s, buf(out)?))
    }

    fn pool(&self, hidden: &Tensor, lens: &Indices, s: SeqShape, mode: PoolMode, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[hidden])?;
        if hidden.len() < s.batch * s.seq * s.cols || out.len() < s.batch * s.cols || lens.len() < s.batch {
            return Err(Error::Internal("pool: shape".into()));
        }
        let lens = idx(lens)?;
        self.record(|ctx, enc| ctx.pool(enc, buf(hidden)?, &lens, s, mode, buf(out)?))
    }

    fn l2_normalize(&self, x: &Tensor, rows: usize, cols: usize) -> Result<()> {
        if x.len() < rows * cols {
            return Err(Error::Internal("l2_normalize: shape".into()));
        }
        self.record(|ctx, enc| ctx.l2_normalize(enc, buf(x)?, rows, cols))
    }
}
