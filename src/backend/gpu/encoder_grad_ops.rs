//! [`EncoderGradOps`] on the GPU (shaders/encoder_grad.wgsl, encoder.wgsl's `embed_sum`, optim.wgsl's `adamw`):
//! each operation checks its operands' shapes on the host, then records its dispatch.

use super::encoder_ops::ATTENTION_QUERY_BLOCK;
use super::kernels::Kernel;
use super::params::{with_dropout, AdamWParams, EncoderParams};
use super::pipelines::{groups_1d, groups_per_row};
use super::recorder::{bind, idx, Gpu};
use crate::backend::ops::*;
use crate::backend::{
    check_distinct, Activation, AdamWStep, AttentionShape, BackendKind, Dropout, EmbeddingTables, Indices, LayerNorm,
    PoolMode, SeqShape, Tensor, TokenRows, MAX_SEQ,
};
use crate::error::{Error, Result};

/// Values per workgroup of `sum_squares` (SQUARES_BLOCK in shaders/encoder_grad.wgsl).
const SQUARES_BLOCK: usize = 4096;

/// The widest head the attention backward kernels hold (MAX_HEAD_DIM in shaders/encoder_grad.wgsl).
const MAX_HEAD_DIM: usize = 128;

/// The product of `dims` as a kernel's u32 count, or an internal error naming `op`.
fn count(dims: &[usize], op: &str) -> Result<u32> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::Internal(format!("{op}: a shape of {dims:?} does not fit a kernel")))
}

/// Checks that each tensor holds its length.
fn fits(op: &str, operands: &[(&Tensor, u32)]) -> Result<()> {
    match operands.iter().find(|(t, n)| t.len() < *n as usize) {
        Some((t, n)) => Err(Error::Internal(format!("{op}: an operand of {} values where {n} are needed", t.len()))),
        None => Ok(()),
    }
}

impl EncoderGradOps for Gpu {
    fn embed_sum(&self, e: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[e.word, e.position, e.token_type])?;
        let rows = tokens.ids.len();
        let n = count(&[rows, e.cols], "embed_sum")?;
        fits("embed_sum", &[(out, n)])?;
        if tokens.type_ids.len() != rows {
            return Err(Error::Internal("embed_sum: shape".into()));
        }
        let last_pos = rows.min(tokens.seq).max(1) - 1 + e.position_offset;
        if e.position.len() < (last_pos + 1) * e.cols {
            return Err(Error::Internal("embed_sum: a position outside the table".into()));
        }
        let (ids, type_ids) = (idx(tokens.ids)?, idx(tokens.type_ids)?);
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: rows as u32,
                cols: e.cols as u32,
                seq: tokens.seq as u32,
                mode: e.position_offset as u32,
                ..Default::default()
            };
            let entries = [
                (1, ids.buffer()),
                (2, type_ids.buffer()),
                (3, bind(e.word)?),
                (4, bind(e.position)?),
                (5, bind(e.token_type)?),
                (8, bind(out)?),
            ];
            ctx.dispatch(enc, Kernel::EmbedSum, 0, &p, &entries, groups_1d(n as usize))
        })
    }

    fn layernorm_keep(
        &self,
        pre: &Tensor,
        residual: Option<&Tensor>,
        rows: usize,
        ln: &LayerNorm<'_>,
        out: &Tensor,
    ) -> Result<()> {
        let mut inputs = vec![ln.gamma, ln.beta];
        inputs.extend(residual);
        check_distinct(BackendKind::Gpu, &[pre, out], &inputs)?;
        let cols = ln.gamma.len();
        let n = count(&[rows, cols], "layernorm_keep")?;
        fits("layernorm_keep", &[(pre, n), (out, n), (ln.beta, cols as u32)])?;
        if let Some(res) = residual {
            fits("layernorm_keep", &[(res, n)])?;
        }
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: rows as u32,
                cols: cols as u32,
                mode: u32::from(residual.is_some()),
                eps: ln.eps,
                ..Default::default()
            };
            // Without a residual, binding 2 (not read) takes the LayerNorm's bias.
            let entries = [
                (2, bind(residual.unwrap_or(ln.beta))?),
                (3, bind(ln.beta)?),
                (4, bind(ln.gamma)?),
                (5, bind(pre)?),
                (6, bind(out)?),
            ];
            ctx.dispatch(enc, Kernel::LayerNormKeep, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn layernorm_backward(
        &self,
        pre: &Tensor,
        dy: &Tensor,
        rows: usize,
        ln: &LayerNorm<'_>,
        dx: &Tensor,
        dy_xhat: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dx, dy_xhat], &[pre, dy, ln.gamma])?;
        let cols = ln.gamma.len();
        let n = count(&[rows, cols], "layernorm_backward")?;
        fits("layernorm_backward", &[(pre, n), (dy, n), (dx, n), (dy_xhat, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: rows as u32, cols: cols as u32, eps: ln.eps, ..Default::default() };
            let entries = [(2, bind(pre)?), (3, bind(dy)?), (4, bind(ln.gamma)?), (5, bind(dx)?), (6, bind(dy_xhat)?)];
            ctx.dispatch(enc, Kernel::LayerNormBackward, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn activation(&self, pre: &Tensor, out: &Tensor, len: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[pre])?;
        let n = count(&[len], "activation")?;
        fits("activation", &[(pre, n), (out, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: n, mode: act.code(), ..Default::default() };
            ctx.dispatch(enc, Kernel::ActForward, 0, &p, &[(2, bind(pre)?), (5, bind(out)?)], groups_1d(len))
        })
    }

    fn activation_backward(&self, pre: &Tensor, grad: &Tensor, len: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[grad], &[pre])?;
        let n = count(&[len], "activation_backward")?;
        fits("activation_backward", &[(pre, n), (grad, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: n, mode: act.code(), ..Default::default() };
            ctx.dispatch(enc, Kernel::ActBackward, 0, &p, &[(2, bind(pre)?), (5, bind(grad)?)], groups_1d(len))
        })
    }

    fn attention_backward(
        &self,
        qkv: &Tensor,
        lens: &Indices,
        s: AttentionShape,
        d_out: &Tensor,
        d_qkv: &Tensor,
        stats: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[d_qkv, stats], &[qkv, d_out])?;
        let op = "attention_backward";
        let h = s.heads * s.head_dim;
        fits(
            op,
            &[
                (qkv, count(&[s.batch, s.seq, 3, h], op)?),
                (d_qkv, count(&[s.batch, s.seq, 3, h], op)?),
                (d_out, count(&[s.batch, s.seq, h], op)?),
                (stats, count(&[s.batch, s.seq, s.heads, 2], op)?),
            ],
        )?;
        if lens.len() < s.batch || s.seq > MAX_SEQ {
            return Err(Error::Internal(format!("{op}: shape")));
        }
        if s.head_dim == 0 || s.head_dim > MAX_HEAD_DIM {
            return Err(Error::Gpu(format!(
                "training attention heads of {} values: the GPU kernels take 1 to {MAX_HEAD_DIM} (use the CPU backend)",
                s.head_dim
            )));
        }
        let lens = idx(lens)?;
        count(&[s.batch, s.heads, s.seq], op)?;
        // One workgroup per block of 64 queries (then keys) of one (sequence, head).
        let blocks = s.batch * s.heads * s.seq.div_ceil(ATTENTION_QUERY_BLOCK);
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: (s.batch * s.seq) as u32,
                cols: h as u32,
                seq: s.seq as u32,
                heads: s.heads as u32,
                head_dim: s.head_dim as u32,
                mode: 0,
                eps: s.scale,
                batch: s.batch as u32,
                ..with_dropout(s.dropout)
            };
            let entries =
                [(1, lens.buffer()), (2, bind(qkv)?), (3, bind(d_out)?), (5, bind(d_qkv)?), (6, bind(stats)?)];
            ctx.dispatch(enc, Kernel::AttentionBackwardQ, 0, &p, &entries, groups_per_row(blocks))?;
            ctx.dispatch(enc, Kernel::AttentionBackwardKv, 0, &p, &entries, groups_per_row(blocks))
        })
    }

    fn pool_backward(
        &self,
        d_pooled: &Tensor,
        lens: &Indices,
        s: SeqShape,
        mode: PoolMode,
        d_hidden: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[d_hidden], &[d_pooled])?;
        let op = "pool_backward";
        if mode == PoolMode::Max {
            return Err(Error::Internal(format!("{op}: max pooling is not trained")));
        }
        let n = count(&[s.batch, s.seq, s.cols], op)?;
        fits(op, &[(d_hidden, n), (d_pooled, count(&[s.batch, s.cols], op)?)])?;
        if lens.len() < s.batch {
            return Err(Error::Internal(format!("{op}: lengths")));
        }
        let lens = idx(lens)?;
        self.record(|ctx, enc| {
            let p = EncoderParams {
                cols: s.cols as u32,
                seq: s.seq as u32,
                mode: mode.code(),
                batch: s.batch as u32,
                ..Default::default()
            };
            let entries = [(1, lens.buffer()), (3, bind(d_pooled)?), (5, bind(d_hidden)?)];
            ctx.dispatch(enc, Kernel::PoolBackward, 0, &p, &entries, groups_1d(n as usize))
        })
    }

    fn l2_normalize_backward(&self, x: &Tensor, dy: &Tensor, rows: usize, cols: usize, dx: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dx], &[x, dy])?;
        let n = count(&[rows, cols], "l2_normalize_backward")?;
        fits("l2_normalize_backward", &[(x, n), (dy, n), (dx, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
            let entries = [(2, bind(x)?), (3, bind(dy)?), (5, bind(dx)?)];
            ctx.dispatch(enc, Kernel::L2NormalizeBackward, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn dropout(&self, x: &Tensor, len: usize, d: Dropout) -> Result<()> {
        let n = count(&[len], "dropout")?;
        fits("dropout", &[(x, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: n, ..with_dropout(Some(d)) };
            ctx.dispatch(enc, Kernel::Dropout, 0, &p, &[(5, bind(x)?)], groups_1d(len))
        })
    }

    fn scale(&self, x: &Tensor, len: usize, alpha: f32) -> Result<()> {
        let n = count(&[len], "scale")?;
        fits("scale", &[(x, n)])?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: n, eps: alpha, ..Default::default() };
            ctx.dispatch(enc, Kernel::ScaleValues, 0, &p, &[(5, bind(x)?)], groups_1d(len))
        })
    }

    fn sum_squares(&self, x: &Tensor, len: usize) -> Result<f64> {
        let n = count(&[len], "sum_squares")?;
        fits("sum_squares", &[(x, n)])?;
        let blocks = len.div_ceil(SQUARES_BLOCK).max(1);
        let partials = self.zeros(blocks)?;
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: n, ..Default::default() };
            ctx.dispatch(
                enc,
                Kernel::SumSquares,
                0,
                &p,
                &[(2, bind(x)?), (5, bind(&partials)?)],
                groups_per_row(blocks),
            )
        })?;
        Ok(self.read(&partials)?.iter().take(blocks).map(|&v| f64::from(v)).sum())
    }

    fn adamw(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, s: AdamWStep) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[param, m, v], &[grad])?;
        let len = param.len();
        let n = count(&[len], "adamw")?;
        fits("adamw", &[(grad, n), (m, n), (v, n)])?;
        let (step_size, bc2_sqrt) = s.corrections();
        self.record(|ctx, enc| {
            let p = AdamWParams {
                len: n,
                lr: s.lr,
                beta1: s.beta1,
                beta2: s.beta2,
                eps: s.eps,
                weight_decay: s.weight_decay,
                grad_scale: s.grad_scale,
                step_size,
                bc2_sqrt,
                ..Default::default()
            };
            let entries = [(1, bind(param)?), (2, bind(grad)?), (3, bind(m)?), (4, bind(v)?)];
            ctx.dispatch(enc, Kernel::AdamW, 0, &p, &entries, groups_1d(len))
        })
    }
}
