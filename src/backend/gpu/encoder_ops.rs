//! The Transformer encoder's device operations (shaders/encoder.wgsl); each has a CPU twin in `cpu_kernels` and a
//! parity test against it.

use super::kernels::Kernel;
use super::params::EncoderParams;
use super::pipelines::{groups_1d, groups_per_row};
use super::{GpuBuf, GpuContext, GpuIdx};
use crate::backend::{AttentionShape, PoolMode, SeqShape, MAX_SEQ};
use crate::error::{Error, Result};

impl GpuContext {
    /// `out[r] = LayerNorm(word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]])`; `rows` token rows, `cols`
    /// wide. `tables` = (word, position, token type), `ln` = (gamma, beta, eps).
    #[allow(clippy::too_many_arguments)]
    pub fn embed_layernorm(
        &self,
        enc: &mut wgpu::CommandEncoder,
        (ids, type_ids): (&GpuIdx, &GpuIdx),
        (word, pos, types): (&GpuBuf, &GpuBuf, &GpuBuf),
        (gamma, beta, eps): (&GpuBuf, &GpuBuf, f32),
        (rows, cols, seq, offset): (usize, usize, usize, usize),
        out: &GpuBuf,
    ) -> Result<()> {
        let p = EncoderParams {
            rows: rows as u32,
            cols: cols as u32,
            seq: seq as u32,
            mode: offset as u32,
            eps,
            ..Default::default()
        };
        let entries = [
            (1, &ids.buf),
            (2, &type_ids.buf),
            (3, &word.buf),
            (4, &pos.buf),
            (5, &types.buf),
            (6, &gamma.buf),
            (7, &beta.buf),
            (8, &out.buf),
        ];
        self.dispatch(enc, Kernel::EmbedLayerNorm, 0, &p, &entries, groups_per_row(rows))
    }

    /// `x[r] = LayerNorm(x[r] + res[r])` for `rows` rows `cols` wide.
    #[allow(clippy::too_many_arguments)]
    pub fn add_layernorm(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuBuf,
        res: &GpuBuf,
        (gamma, beta, eps): (&GpuBuf, &GpuBuf, f32),
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        let p = EncoderParams { rows: rows as u32, cols: cols as u32, eps, ..Default::default() };
        let entries = [(3, &res.buf), (6, &gamma.buf), (7, &beta.buf), (8, &x.buf)];
        self.dispatch(enc, Kernel::AddLayerNorm, 0, &p, &entries, groups_per_row(rows))
    }

    /// Multi-head self-attention with the padding mask (see shaders/encoder.wgsl).
    pub fn attention(
        &self,
        enc: &mut wgpu::CommandEncoder,
        qkv: &GpuBuf,
        lens: &GpuIdx,
        s: AttentionShape,
        out: &GpuBuf,
    ) -> Result<()> {
        if s.seq > MAX_SEQ {
            return Err(Error::Internal(format!("attention over {} tokens (at most {MAX_SEQ})", s.seq)));
        }
        let p = EncoderParams {
            rows: (s.batch * s.seq) as u32,
            cols: (s.heads * s.head_dim) as u32,
            seq: s.seq as u32,
            heads: s.heads as u32,
            head_dim: s.head_dim as u32,
            mode: 0,
            eps: s.scale,
            batch: s.batch as u32,
        };
        let entries = [(1, &lens.buf), (3, &qkv.buf), (8, &out.buf)];
        self.dispatch(enc, Kernel::Attention, 0, &p, &entries, groups_per_row(s.batch * s.heads * s.seq))
    }

    /// Pools each sequence's real tokens into one row.
    pub fn pool(
        &self,
        enc: &mut wgpu::CommandEncoder,
        hidden: &GpuBuf,
        lens: &GpuIdx,
        s: SeqShape,
        mode: PoolMode,
        out: &GpuBuf,
    ) -> Result<()> {
        let p = EncoderParams {
            rows: s.batch as u32,
            cols: s.cols as u32,
            seq: s.seq as u32,
            mode: mode.code(),
            ..Default::default()
        };
        let entries = [(1, &lens.buf), (3, &hidden.buf), (8, &out.buf)];
        self.dispatch(enc, Kernel::Pool, 0, &p, &entries, groups_1d(s.batch * s.cols))
    }

    /// Rows scaled to unit l2 norm, in place.
    pub fn l2_normalize(&self, enc: &mut wgpu::CommandEncoder, x: &GpuBuf, rows: usize, cols: usize) -> Result<()> {
        let p = EncoderParams { rows: rows as u32, cols: cols as u32, ..Default::default() };
        self.dispatch(enc, Kernel::L2Normalize, 0, &p, &[(8, &x.buf)], groups_per_row(rows))
    }
}
