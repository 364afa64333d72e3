//! Every device operation but the GEMM: each records one or two dispatches of a registered kernel with its
//! parameter struct. Each has a CPU twin in `cpu_kernels` and a parity test against it.

use super::kernels::Kernel;
use super::params::{
    BagParams, EwParams, GatherParams, NeighborParams, OptParams, RankParams, SampledParams, SelParams, SoftmaxParams,
    SparseParams, TickParams,
};
use super::pipelines::{groups_1d, groups_per_row};
use super::{GpuBuf, GpuContext, GpuIdx};
use crate::backend::{Activation, AdamStep};
use crate::error::Result;

/// A CSR matrix on the device: indptr, indices, values.
pub type GpuCsr<'a> = (&'a GpuIdx, &'a GpuIdx, &'a GpuBuf);

impl GpuContext {
    /// Fused softmax cross-entropy (see shaders/softmax_xent.wgsl).
    pub fn softmax_xent(
        &self,
        enc: &mut wgpu::CommandEncoder,
        logits: &GpuBuf,
        targets: &GpuIdx,
        rows: usize,
        cols: usize,
        losses: &GpuBuf,
    ) -> Result<()> {
        let p = SoftmaxParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
        let entries = [(1, &logits.buf), (2, &targets.buf), (3, &losses.buf)];
        self.dispatch(enc, Kernel::SoftmaxXent, 0, &p, &entries, groups_per_row(rows))
    }

    /// Gather-and-pool.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_bag(
        &self,
        enc: &mut wgpu::CommandEncoder,
        table: &GpuBuf,
        dim: usize,
        (items, offsets, weights): (&GpuIdx, &GpuIdx, &GpuBuf),
        bags: usize,
        mean: bool,
        out: &GpuBuf,
    ) -> Result<()> {
        let p = BagParams { count: bags as u32, dim: dim as u32, mean: mean.into(), pad0: 0 };
        let entries = [(1, &table.buf), (2, &items.buf), (3, &offsets.buf), (4, &out.buf), (10, &weights.buf)];
        self.dispatch(enc, Kernel::BagForward, 0, &p, &entries, groups_1d(bags * dim))
    }

    /// The embedding gradient as a segment sum over `segments` items; clears `grad` first when `zero_others`.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_bag_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        d_pooled: &GpuBuf,
        dim: usize,
        (offsets, weights): (&GpuIdx, &GpuBuf),
        (seg_items, seg_offsets, seg_examples, seg_weights): (&GpuIdx, &GpuIdx, &GpuIdx, &GpuBuf),
        segments: usize,
        mean: bool,
        grad: &GpuBuf,
        zero_others: bool,
    ) -> Result<()> {
        if zero_others {
            enc.clear_buffer(&grad.buf, 0, None);
        }
        let p = BagParams { count: segments as u32, dim: dim as u32, mean: mean.into(), pad0: 0 };
        let entries = [
            (3, &offsets.buf),
            (5, &d_pooled.buf),
            (6, &seg_items.buf),
            (7, &seg_offsets.buf),
            (8, &seg_examples.buf),
            (9, &grad.buf),
            (10, &weights.buf),
            (11, &seg_weights.buf),
        ];
        self.dispatch(enc, Kernel::BagBackward, 0, &p, &entries, groups_1d(segments * dim))
    }

    /// `x = act(x + bias)`.
    pub fn bias_act(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuBuf,
        bias: &GpuBuf,
        rows: usize,
        cols: usize,
        act: Activation,
    ) -> Result<()> {
        let p = EwParams { rows: rows as u32, cols: cols as u32, act: act.code(), chunk: 0 };
        self.dispatch(enc, Kernel::BiasAct, 0, &p, &[(1, &x.buf), (2, &bias.buf)], groups_1d(rows * cols))
    }

    /// `grad *= (act > 0)` over the first `len` values.
    pub fn relu_backward(&self, enc: &mut wgpu::CommandEncoder, grad: &GpuBuf, act: &GpuBuf, len: usize) -> Result<()> {
        let p = EwParams { rows: 1, cols: len as u32, act: 0, chunk: 0 };
        self.dispatch(enc, Kernel::ReluBackward, 0, &p, &[(1, &grad.buf), (2, &act.buf)], groups_1d(len))
    }

    /// `out[c] = Σ_r x[r][c]` of a rows × cols matrix. Tall ones (the bias gradients at large batches) sum chunks of
    /// 256 rows side by side, then the chunks in order.
    pub fn column_sums(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuBuf,
        rows: usize,
        cols: usize,
        out: &GpuBuf,
    ) -> Result<()> {
        // Chunks of at least 32 rows, at most 16 of them: set by the shape alone, so the order of the sums is the
        // same on every adapter. A batch of 256 rows sums in 8 chunks of 32 (one pass of 256 dependent loads per
        // column took 50 µs on an H200: latency, not bandwidth).
        let chunk = rows.div_ceil(16).max(32);
        let chunks = rows.div_ceil(chunk);
        if chunks > 1 {
            if let Some(scratch) = self.scratch(chunks * cols) {
                let p = EwParams { rows: rows as u32, cols: cols as u32, act: 0, chunk: chunk as u32 };
                let (gx, gy, _) = groups_1d(cols);
                let entries = [(3, &scratch), (4, &x.buf)];
                self.dispatch(enc, Kernel::ColumnSumsChunks, 0, &p, &entries, (gx, gy, chunks as u32))?;
                let p = EwParams { rows: chunks as u32, cols: cols as u32, act: 0, chunk: 0 };
                return self.dispatch(enc, Kernel::ColumnSums, 0, &p, &[(3, &out.buf), (4, &scratch)], groups_1d(cols));
            }
        }
        let p = EwParams { rows: rows as u32, cols: cols as u32, act: 0, chunk: 0 };
        self.dispatch(enc, Kernel::ColumnSums, 0, &p, &[(3, &out.buf), (4, &x.buf)], groups_1d(cols))
    }

    /// Advances Adam's step state (`state`: 4 floats) to the next step, or with `set_t` > 0 sets it to that step.
    pub fn adam_tick(
        &self,
        enc: &mut wgpu::CommandEncoder,
        state: &GpuBuf,
        beta1: f32,
        beta2: f32,
        set_t: u32,
    ) -> Result<()> {
        let p = TickParams { beta1, beta2, set_t, pad0: 0 };
        self.dispatch(enc, Kernel::AdamTick, 0, &p, &[(5, &state.buf)], (1, 1, 1))
    }

    /// One Adam step at the step `state` holds (`adam_tick`); `s.t` is not read here.
    #[allow(clippy::too_many_arguments)]
    pub fn adam(
        &self,
        enc: &mut wgpu::CommandEncoder,
        param: &GpuBuf,
        grad: &GpuBuf,
        m: &GpuBuf,
        v: &GpuBuf,
        state: &GpuBuf,
        s: AdamStep,
    ) -> Result<()> {
        let p = OptParams {
            len: param.len as u32,
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weight_decay,
            ..Default::default()
        };
        let entries = [(1, &param.buf), (2, &grad.buf), (3, &m.buf), (4, &v.buf), (5, &state.buf)];
        self.dispatch(enc, Kernel::Adam, 0, &p, &entries, groups_1d(param.len))
    }

    /// `dst[j][e] = src[idx[j]·outer + e·inner]` for `count` indices of `width` values (`(width, outer, inner)`).
    pub fn gather(
        &self,
        enc: &mut wgpu::CommandEncoder,
        src: &GpuBuf,
        idx: &GpuIdx,
        count: usize,
        (width, outer, inner): (u32, u32, u32),
        dst: &GpuBuf,
    ) -> Result<()> {
        let p = GatherParams { count: count as u32, width, outer, inner };
        let entries = [(1, &src.buf), (2, &idx.buf), (3, &dst.buf)];
        self.dispatch(enc, Kernel::Gather, 0, &p, &entries, groups_1d(count * width as usize))
    }

    /// The sampled softmax loss and gradient over `count` candidate columns (see shaders/sampled.wgsl).
    #[allow(clippy::too_many_arguments)]
    pub fn sampled_xent(
        &self,
        enc: &mut wgpu::CommandEncoder,
        logits: &GpuBuf,
        rows: usize,
        count: usize,
        (bias, log_q, shared, targets): (&GpuBuf, &GpuBuf, &GpuBuf, &GpuIdx),
        losses: &GpuBuf,
    ) -> Result<()> {
        let p = SampledParams { rows: rows as u32, cols: count as u32, count: count as u32, pad0: 0 };
        let entries =
            [(2, &targets.buf), (3, &logits.buf), (4, &bias.buf), (5, &log_q.buf), (6, &shared.buf), (7, &losses.buf)];
        self.dispatch(enc, Kernel::SampledXent, 0, &p, &entries, groups_per_row(rows))
    }

    /// Lazy Adam over `count` selected slices of `width` values, at the step `state` holds (`adam_tick`).
    #[allow(clippy::too_many_arguments)]
    pub fn adam_selected(
        &self,
        enc: &mut wgpu::CommandEncoder,
        (param, grad, m, v): (&GpuBuf, &GpuBuf, &GpuBuf, &GpuBuf),
        state: &GpuBuf,
        idx: &GpuIdx,
        count: usize,
        shape: SelParams,
        s: AdamStep,
    ) -> Result<()> {
        let p = SelParams {
            count: count as u32,
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weight_decay,
            ..shape
        };
        let entries = [(1, &param.buf), (2, &grad.buf), (3, &m.buf), (4, &v.buf), (5, &state.buf), (6, &idx.buf)];
        self.dispatch(enc, Kernel::AdamSelected, 0, &p, &entries, groups_1d(count * shape.width as usize))
    }

    /// One SGD step with momentum (`velocity` holds the momentum buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn sgd(
        &self,
        enc: &mut wgpu::CommandEncoder,
        param: &GpuBuf,
        grad: &GpuBuf,
        velocity: &GpuBuf,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()> {
        let p = OptParams { len: param.len as u32, lr, weight_decay, momentum, ..Default::default() };
        let entries = [(1, &param.buf), (2, &grad.buf), (3, &velocity.buf)];
        self.dispatch(enc, Kernel::Sgd, 0, &p, &entries, groups_1d(param.len))
    }

    /// `out = X·B` for a CSR `X` (rows×cols) and dense `B` (cols×k).
    #[allow(clippy::too_many_arguments)]
    pub fn csr_mul(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        cols: usize,
        csr: GpuCsr<'_>,
        b: &GpuBuf,
        k: usize,
        out: &GpuBuf,
    ) -> Result<()> {
        let p = SparseParams { rows: rows as u32, cols: cols as u32, k: k as u32, pad0: 0 };
        let entries = [(1, &csr.0.buf), (2, &csr.1.buf), (3, &csr.2.buf), (4, &b.buf), (5, &out.buf)];
        self.dispatch(enc, Kernel::CsrMul, 0, &p, &entries, groups_1d(rows * k))
    }

    /// `out = X·Xᵀ` (rows×rows) for a CSR `X`.
    pub fn csr_outer(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        cols: usize,
        csr: GpuCsr<'_>,
        out: &GpuBuf,
    ) -> Result<()> {
        let p = SparseParams { rows: rows as u32, cols: cols as u32, k: 0, pad0: 0 };
        let entries = [(1, &csr.0.buf), (2, &csr.1.buf), (3, &csr.2.buf), (5, &out.buf)];
        self.dispatch(enc, Kernel::CsrOuter, 0, &p, &entries, groups_1d(rows * rows))
    }

    /// Masked target ranks (see shaders/ranking.wgsl).
    #[allow(clippy::too_many_arguments)]
    pub fn target_ranks(
        &self,
        enc: &mut wgpu::CommandEncoder,
        scores: &GpuBuf,
        rows: usize,
        cols: usize,
        targets: &GpuIdx,
        mask_items: &GpuIdx,
        mask_offsets: &GpuIdx,
        ranks: &GpuBuf,
    ) -> Result<()> {
        let p = RankParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
        let entries =
            [(1, &scores.buf), (2, &targets.buf), (3, &mask_items.buf), (4, &mask_offsets.buf), (5, &ranks.buf)];
        self.dispatch(enc, Kernel::TargetRanks, 0, &p, &entries, groups_per_row(rows))
    }

    /// Most neighbours per row the `top_k` kernel keeps (its private arrays).
    pub const MAX_NEIGHBORS: usize = 64;

    /// Cosine top-k of every row of `x` (n × dim), itself excluded; `k` ≤ [`Self::MAX_NEIGHBORS`].
    pub fn cosine_top_k(&self, x: &GpuBuf, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let k = k.min(n.saturating_sub(1)).min(Self::MAX_NEIGHBORS);
        let unit = self.upload(&vec![0.0; n * dim])?;
        let out_idx = self.upload_idx(&vec![0; n * k])?;
        let out_sim = self.upload(&vec![0.0; n * k])?;
        let p = NeighborParams { n: n as u32, dim: dim as u32, k: k as u32, pad0: 0 };
        let mut enc = self.encoder();
        self.dispatch(&mut enc, Kernel::Normalize, 0, &p, &[(1, &x.buf), (2, &unit.buf)], groups_1d(n))?;
        let entries = [(2, &unit.buf), (3, &out_idx.buf), (4, &out_sim.buf)];
        self.dispatch(&mut enc, Kernel::TopK, 0, &p, &entries, groups_1d(n))?;
        self.submit(enc);
        Ok((self.download_idx(&out_idx)?, self.download(&out_sim)?))
    }
}
