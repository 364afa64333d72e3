//! [`EncoderOps`] on the GPU (shaders/encoder.wgsl): each operation checks its operands on the host (the kernels
//! index tables by token id, type and position), then records its dispatch.

use super::gemm::Epilogue;
use super::kernels::Kernel;
use super::params::EncoderParams;
use super::pipelines::{groups_1d, groups_per_row};
use super::recorder::{bind, buf, idx, operand, Gpu};
use crate::backend::ops::EncoderOps;
use crate::backend::{
    check_distinct, Activation, AttentionShape, BackendKind, DType, EmbeddingTables, Indices, LayerNorm, MatDims,
    PoolMode, SeqShape, Tensor, TokenRows, MAX_SEQ,
};
use crate::error::{Error, Result};

/// Query rows per workgroup of the attention kernel (its workgroup size).
pub(super) const ATTENTION_QUERY_BLOCK: usize = 64;

/// The widest head the attention kernel holds (its private arrays: MAX_HEAD_DIM in shaders/encoder.wgsl).
const ATTENTION_MAX_HEAD_DIM: usize = 128;

/// `a · b · c` without overflow.
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// `t` holds `len` values.
fn holds(t: &Tensor, len: Option<usize>) -> bool {
    len.is_some_and(|l| l <= t.len())
}

impl EncoderOps for Gpu {
    fn linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        out: &Tensor,
        dims: MatDims,
        bias: &Tensor,
        act: Activation,
    ) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[x, w, bias])?;
        // The kernel by the weights' type and shape only, and k never split: a row's sum does not depend on m.
        let kernel = match w.dtype() {
            DType::F16 => self.f16_kernel(false)?,
            DType::F32 => self.ctx().kernel_for_any_rows(dims.n, dims.k),
        };
        self.record(|ctx, enc| {
            let epilogue = Some(Epilogue { bias: buf(bias)?, act });
            ctx.gemm_unsplit(kernel, enc, (buf(x)?, false), (operand(w)?, true), buf(out)?, dims, epilogue)
        })
    }

    fn embed_layernorm(&self, e: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[e.word, e.position, e.token_type, e.ln.gamma, e.ln.beta])?;
        let rows = tokens.ids.len();
        // Positions index the position table: checked here. Ids and types index theirs through the bounds checks
        // wgpu injects (this kernel is not trusted); the encoder checks them against the model's tables first.
        if tokens.type_ids.len() != rows || !holds(out, product(&[rows, e.cols])) || e.ln.gamma.len() != e.cols {
            return Err(Error::Internal("embed_layernorm: shape".into()));
        }
        let last_pos = rows.min(tokens.seq).max(1) - 1 + e.position_offset;
        if !holds(e.position, product(&[last_pos + 1, e.cols])) {
            return Err(Error::Internal("embed_layernorm: a position outside the table".into()));
        }
        let (ids, type_ids) = (idx(tokens.ids)?, idx(tokens.type_ids)?);
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: rows as u32,
                cols: e.cols as u32,
                seq: tokens.seq as u32,
                mode: e.position_offset as u32,
                eps: e.ln.eps,
                ..Default::default()
            };
            let entries = [
                (1, ids.buffer()),
                (2, type_ids.buffer()),
                (3, bind(e.word)?),
                (4, bind(e.position)?),
                (5, bind(e.token_type)?),
                (6, bind(e.ln.gamma)?),
                (7, bind(e.ln.beta)?),
                (8, bind(out)?),
            ];
            ctx.dispatch(enc, Kernel::EmbedLayerNorm, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn add_layernorm(&self, x: &Tensor, residual: &Tensor, rows: usize, ln: &LayerNorm<'_>) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[x], &[residual, ln.gamma, ln.beta])?;
        let cols = ln.gamma.len();
        let len = product(&[rows, cols]);
        if !holds(x, len) || !holds(residual, len) || ln.beta.len() != cols {
            return Err(Error::Internal("add_layernorm: shape".into()));
        }
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: rows as u32, cols: cols as u32, eps: ln.eps, ..Default::default() };
            let entries = [(3, bind(residual)?), (6, bind(ln.gamma)?), (7, bind(ln.beta)?), (8, bind(x)?)];
            ctx.dispatch(enc, Kernel::AddLayerNorm, 0, &p, &entries, groups_per_row(rows))
        })
    }

    fn attention(&self, qkv: &Tensor, lens: &Indices, s: AttentionShape, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[qkv])?;
        let h = product(&[s.heads, s.head_dim]);
        let fits = h
            .is_some_and(|h| holds(qkv, product(&[s.batch, s.seq, 3, h])) && holds(out, product(&[s.batch, s.seq, h])));
        if !fits || lens.len() < s.batch {
            return Err(Error::Internal("attention: shape".into()));
        }
        if s.seq > MAX_SEQ {
            return Err(Error::Internal(format!("attention over {} tokens (at most {MAX_SEQ})", s.seq)));
        }
        if s.head_dim == 0 || s.head_dim > ATTENTION_MAX_HEAD_DIM {
            return Err(Error::Gpu(format!(
                "attention heads of {} values: the GPU kernel takes 1 to {ATTENTION_MAX_HEAD_DIM} (use the CPU backend)",
                s.head_dim
            )));
        }
        let lens = idx(lens)?;
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: (s.batch * s.seq) as u32,
                cols: (s.heads * s.head_dim) as u32,
                seq: s.seq as u32,
                heads: s.heads as u32,
                head_dim: s.head_dim as u32,
                mode: 0,
                eps: s.scale,
                batch: s.batch as u32,
                ..super::params::with_dropout(s.dropout)
            };
            let entries = [(1, lens.buffer()), (3, bind(qkv)?), (8, bind(out)?)];
            let blocks = s.batch * s.heads * s.seq.div_ceil(ATTENTION_QUERY_BLOCK);
            ctx.dispatch(enc, Kernel::Attention, 0, &p, &entries, groups_per_row(blocks))
        })
    }

    fn pool(&self, hidden: &Tensor, lens: &Indices, s: SeqShape, mode: PoolMode, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[out], &[hidden])?;
        if !holds(hidden, product(&[s.batch, s.seq, s.cols])) || !holds(out, product(&[s.batch, s.cols])) {
            return Err(Error::Internal("pool: shape".into()));
        }
        if lens.len() < s.batch {
            return Err(Error::Internal("pool: lengths".into()));
        }
        let lens = idx(lens)?;
        self.record(|ctx, enc| {
            let p = EncoderParams {
                rows: s.batch as u32,
                cols: s.cols as u32,
                seq: s.seq as u32,
                mode: mode.code(),
                ..Default::default()
            };
            let entries = [(1, lens.buffer()), (3, bind(hidden)?), (8, bind(out)?)];
            ctx.dispatch(enc, Kernel::Pool, 0, &p, &entries, groups_1d(s.batch * s.cols))
        })
    }

    fn l2_normalize(&self, x: &Tensor, rows: usize, cols: usize) -> Result<()> {
        if !holds(x, product(&[rows, cols])) {
            return Err(Error::Internal("l2_normalize: shape".into()));
        }
        self.record(|ctx, enc| {
            let p = EncoderParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
            ctx.dispatch(enc, Kernel::L2Normalize, 0, &p, &[(8, bind(x)?)], groups_per_row(rows))
        })
    }
}
