//! [`ModelOps`] on the GPU: each operation checks its operands on the host, then records its kernel's dispatch
//! (shaders/gemm*, softmax_xent, embedding_bag, elementwise, optim, sampled, ranking, neighbors) into the pending
//! encoder. The cosine neighbour search runs on the device up to 64 neighbours per item, on the host beyond.

use super::gemm::Epilogue;
use super::gemm::GemmKernel;
use super::kernels::Kernel;
use super::params::{
    BagParams, EwParams, GatherParams, NeighborParams, OptParams, RankParams, SampledParams, SelParams, SoftmaxParams,
};
use super::pipelines::{groups_1d, groups_per_row};
use super::recorder::{bind, buf, idx, operand, Gpu};
use crate::backend::ops::{ModelOps, TensorStore};
use crate::backend::{
    check_distinct, Activation, AdamStep, BackendKind, Bags, DType, Indices, MatDims, RankMasks, SampledColumns,
    Selected, SgdStep, Tensor,
};
use crate::error::{Error, Result};

impl Gpu {
    /// The GEMM kernel of a product: by B's type (the f16 path's kernels for f16 weights), then by size.
    fn kernel_for(&self, b: &Tensor, ta: bool, dims: MatDims) -> Result<GemmKernel> {
        match b.dtype() {
            DType::F16 => self.f16_kernel(ta),
            DType::F32 => Ok(self.ctx().kernel_for(dims)),
        }
    }
}

/// Most neighbours per row the `top_k` kernel keeps (its private arrays).
const MAX_NEIGHBORS: usize = 64;

/// `x` as a u32 kernel parameter, or an internal error naming `what`.
fn u32_of(x: usize, what: &str) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::Internal(format!("{what}: {x} does not fit a kernel parameter")))
}

/// `len` values fit in `t` (checked arithmetic).
fn holds(t: &Tensor, len: Option<usize>) -> bool {
    len.is_some_and(|l| l <= t.len())
}

impl ModelOps for Gpu {
    fn matmul(&self, a: &Tensor, ta: bool, b: &Tensor, tb: bool, c: &Tensor, dims: MatDims, beta: f32) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[c], &[a, b])?;
        let kernel = self.kernel_for(b, ta, dims)?;
        self.record(|ctx, enc| ctx.gemm(kernel, enc, (buf(a)?, ta), (operand(b)?, tb), buf(c)?, dims, beta, None))
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
        let kernel = self.kernel_for(b, ta, dims)?;
        self.record(|ctx, enc| {
            let epilogue = Some(Epilogue { bias: buf(bias)?, act });
            ctx.gemm(kernel, enc, (buf(a)?, ta), (operand(b)?, tb), buf(c)?, dims, 0.0, epilogue)
        })
    }

    fn embedding_bag(&self, table: &Tensor, dim: usize, bags: &Bags<'_>, mean: bool, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[table, bags.weights])?;
        let (items, offsets) = (idx(bags.items)?, idx(bags.offsets)?);
        self.record(|ctx, enc| {
            let p =
                BagParams { count: u32_of(bags.bags, "bags")?, dim: u32_of(dim, "dim")?, mean: mean.into(), pad0: 0 };
            let entries = [
                (1, bind(table)?),
                (2, items.buffer()),
                (3, offsets.buffer()),
                (4, bind(out)?),
                (10, bind(bags.weights)?),
            ];
            ctx.dispatch(enc, Kernel::BagForward, 0, &p, &entries, groups_1d(bags.bags * dim))
        })
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
        let offsets = idx(bags.offsets)?;
        let (seg_items, seg_offsets, seg_examples) =
            (idx(bags.seg_items)?, idx(bags.seg_offsets)?, idx(bags.seg_examples)?);
        let segments = bags.seg_items.len();
        self.record(|ctx, enc| {
            if zero_others {
                enc.clear_buffer(bind(grad)?, 0, None);
            }
            let p = BagParams {
                count: u32_of(segments, "segments")?,
                dim: u32_of(dim, "dim")?,
                mean: mean.into(),
                pad0: 0,
            };
            let entries = [
                (3, offsets.buffer()),
                (5, bind(d_pooled)?),
                (6, seg_items.buffer()),
                (7, seg_offsets.buffer()),
                (8, seg_examples.buffer()),
                (9, bind(grad)?),
                (10, bind(bags.weights)?),
                (11, bind(bags.seg_weights)?),
            ];
            ctx.dispatch(enc, Kernel::BagBackward, 0, &p, &entries, groups_1d(segments * dim))
        })
    }

    fn bias_act(&self, x: &Tensor, bias: &Tensor, rows: usize, cols: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[x], &[bias])?;
        if !holds(x, rows.checked_mul(cols)) || bias.len() < cols {
            return Err(Error::Internal("bias_act: shape".into()));
        }
        self.record(|ctx, enc| {
            let p = EwParams { rows: rows as u32, cols: cols as u32, act: act.code(), chunk: 0 };
            ctx.dispatch(enc, Kernel::BiasAct, 0, &p, &[(1, bind(x)?), (2, bind(bias)?)], groups_1d(rows * cols))
        })
    }

    fn relu_backward(&self, grad: &Tensor, activation: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[grad], &[activation])?;
        let len = grad.len();
        self.record(|ctx, enc| {
            let p = EwParams { rows: 1, cols: u32_of(len, "relu_backward")?, act: 0, chunk: 0 };
            ctx.dispatch(enc, Kernel::ReluBackward, 0, &p, &[(1, bind(grad)?), (2, bind(activation)?)], groups_1d(len))
        })
    }

    /// Tall matrices (the bias gradients at large batches) sum chunks of rows side by side, then the chunks in order.
    fn column_sums(&self, x: &Tensor, rows: usize, cols: usize, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[x])?;
        // Chunks of at least 32 rows, at most 16 of them: set by the shape alone, so the order of the sums is the
        // same on every adapter. A batch of 256 rows sums in 8 chunks of 32 (one pass of 256 dependent loads per
        // column took 50 µs on an H200: latency, not bandwidth).
        let chunk = rows.div_ceil(16).max(32);
        let chunks = rows.div_ceil(chunk);
        self.record(|ctx, enc| {
            if chunks > 1 {
                if let Some(scratch) = ctx.scratch(chunks * cols) {
                    let p = EwParams { rows: rows as u32, cols: cols as u32, act: 0, chunk: chunk as u32 };
                    let (gx, gy, _) = groups_1d(cols);
                    let entries = [(3, &scratch), (4, bind(x)?)];
                    ctx.dispatch(enc, Kernel::ColumnSumsChunks, 0, &p, &entries, (gx, gy, chunks as u32))?;
                    let p = EwParams { rows: chunks as u32, cols: cols as u32, act: 0, chunk: 0 };
                    let entries = [(3, bind(out)?), (4, &scratch)];
                    return ctx.dispatch(enc, Kernel::ColumnSums, 0, &p, &entries, groups_1d(cols));
                }
            }
            let p = EwParams { rows: rows as u32, cols: cols as u32, act: 0, chunk: 0 };
            ctx.dispatch(enc, Kernel::ColumnSums, 0, &p, &[(3, bind(out)?), (4, bind(x)?)], groups_1d(cols))
        })
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
        self.record(|ctx, enc| {
            let p = SoftmaxParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
            let entries = [(1, bind(logits)?), (2, targets.buffer()), (3, bind(losses)?)];
            ctx.dispatch(enc, Kernel::SoftmaxXent, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn adam(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, s: AdamStep) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, m, v], &[grad])?;
        let len = param.len();
        self.with_adam_state(s, |ctx, enc, state| {
            let p = OptParams {
                len: u32_of(len, "adam")?,
                lr: s.lr,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
                weight_decay: s.weight_decay,
                ..Default::default()
            };
            let entries = [(1, bind(param)?), (2, bind(grad)?), (3, bind(m)?), (4, bind(v)?), (5, state.buffer())];
            ctx.dispatch(enc, Kernel::Adam, 0, &p, &entries, groups_1d(len))
        })
    }

    fn gather(&self, src: &Tensor, ix: &Indices, width: usize, stride: (usize, usize), dst: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dst], &[src])?;
        let count = ix.len();
        if !holds(dst, count.checked_mul(width)) {
            return Err(Error::Internal("gather: a short destination".into()));
        }
        let p = GatherParams {
            count: u32_of(count, "gather")?,
            width: u32_of(width, "gather: width")?,
            outer: u32_of(stride.0, "gather: stride")?,
            inner: u32_of(stride.1, "gather: stride")?,
        };
        let ix = idx(ix)?;
        self.record(|ctx, enc| {
            let entries = [(1, bind(src)?), (2, ix.buffer()), (3, bind(dst)?)];
            ctx.dispatch(enc, Kernel::Gather, 0, &p, &entries, groups_1d(count * width))
        })
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
        self.record(|ctx, enc| {
            let p = SampledParams { rows: rows as u32, cols: n as u32, count: n as u32, pad0: 0 };
            let entries = [
                (2, targets.buffer()),
                (3, bind(logits)?),
                (4, bind(c.bias)?),
                (5, bind(c.log_q)?),
                (6, bind(c.shared)?),
                (7, bind(losses)?),
            ];
            ctx.dispatch(enc, Kernel::SampledXent, 0, &p, &entries, groups_per_row(rows))
        })?;
        self.column_sums(logits, rows, n, bias_grad)
    }

    fn adam_selected(
        &self,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        sel: &Selected<'_>,
        s: AdamStep,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, m, v], &[grad])?;
        let count = sel.idx.len();
        let p = SelParams {
            count: u32_of(count, "adam_selected")?,
            width: u32_of(sel.width, "adam_selected: width")?,
            p_outer: u32_of(sel.param_stride.0, "adam_selected: stride")?,
            p_inner: u32_of(sel.param_stride.1, "adam_selected: stride")?,
            g_outer: u32_of(sel.grad_stride.0, "adam_selected: stride")?,
            g_inner: u32_of(sel.grad_stride.1, "adam_selected: stride")?,
            by_index: sel.grad_by_index.into(),
            lr: s.lr,
            beta1: s.beta1,
            beta2: s.beta2,
            eps: s.eps,
            weight_decay: s.weight_decay,
            ..SelParams::default()
        };
        let ix = idx(sel.idx)?;
        self.with_adam_state(s, |ctx, enc, state| {
            let entries = [
                (1, bind(param)?),
                (2, bind(grad)?),
                (3, bind(m)?),
                (4, bind(v)?),
                (5, state.buffer()),
                (6, ix.buffer()),
            ];
            ctx.dispatch(enc, Kernel::AdamSelected, 0, &p, &entries, groups_1d(count * sel.width))
        })
    }

    fn sgd(&self, param: &Tensor, grad: &Tensor, velocity: &Tensor, s: SgdStep) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, velocity], &[grad])?;
        let len = param.len();
        self.record(|ctx, enc| {
            let p = OptParams {
                len: u32_of(len, "sgd")?,
                lr: s.lr,
                weight_decay: s.weight_decay,
                momentum: s.momentum,
                ..Default::default()
            };
            let entries = [(1, bind(param)?), (2, bind(grad)?), (3, bind(velocity)?)];
            ctx.dispatch(enc, Kernel::Sgd, 0, &p, &entries, groups_1d(len))
        })
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
        self.record(|ctx, enc| {
            let p = RankParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
            let entries = [(1, bind(scores)?), (2, t.buffer()), (3, mi.buffer()), (4, mo.buffer()), (5, bind(ranks)?)];
            ctx.dispatch(enc, Kernel::TargetRanks, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn cosine_top_k(&self, x: &Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        if !holds(x, n.checked_mul(dim)) {
            return Err(Error::Internal("cosine_top_k: shape".into()));
        }
        if k > MAX_NEIGHBORS {
            // More neighbours than the kernel keeps per row: rank on the host.
            let table = self.read(x)?;
            return crate::backend::cpu::cosine_top_k(&table[..n * dim], n, dim, k);
        }
        let k = k.min(n.saturating_sub(1));
        let (unit, out_idx, out_sim) =
            (self.tensor(&vec![0.0; n * dim])?, self.index_buffer(n * k)?, self.tensor(&vec![0.0; n * k])?);
        let out_idx_buf = idx(&out_idx)?;
        self.record(|ctx, enc| {
            let p = NeighborParams { n: n as u32, dim: dim as u32, k: k as u32, pad0: 0 };
            ctx.dispatch(enc, Kernel::Normalize, 0, &p, &[(1, bind(x)?), (2, bind(&unit)?)], groups_1d(n))?;
            let entries = [(2, bind(&unit)?), (3, out_idx_buf.buffer()), (4, bind(&out_sim)?)];
            ctx.dispatch(enc, Kernel::TopK, 0, &p, &entries, groups_1d(n))
        })?;
        let sims = self.read(&out_sim)?;
        self.flush()?;
        let neighbours = self.ctx().download_idx(&out_idx_buf.with_len(n * k))?;
        Ok((neighbours, sims))
    }
}
