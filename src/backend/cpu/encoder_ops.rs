//! [`EncoderOps`] on the CPU: each operation checks its operands and runs its kernel on the tensors' slices.

use super::len_of;
use super::{r, ri, w};
use crate::backend::ops::*;
use crate::backend::{
    check_distinct, Activation, AttentionShape, BackendKind, EmbeddingTables, Indices, LayerNorm, MatDims, PoolMode,
    SeqShape, Tensor, TokenRows,
};
use crate::error::{Error, Result};

impl EncoderOps for super::Cpu {
    fn linear(
        &self,
        x: &Tensor,
        wt: &Tensor,
        out: &Tensor,
        dims: MatDims,
        bias: &Tensor,
        act: Activation,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[x, wt, bias])?;
        super::matmul_rows_invariant(&r(x)?, &r(wt)?, &mut w(out)?, dims)?;
        self.bias_act(out, bias, dims.m, dims.n, act)
    }

    fn embed_layernorm(&self, e: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[e.word, e.position, e.token_type, e.ln.gamma, e.ln.beta])?;
        let (ids, types) = (ri(tokens.ids)?, ri(tokens.type_ids)?);
        let rows = ids.len();
        let (word, pos, ty) = (r(e.word)?, r(e.position)?, r(e.token_type)?);
        let last_pos = (rows.min(tokens.seq).max(1) - 1 + e.position_offset + 1) * e.cols;
        let in_range = ids.iter().all(|&i| (i as usize + 1) * e.cols <= word.len())
            && types.iter().all(|&t| (t as usize + 1) * e.cols <= ty.len())
            && last_pos <= pos.len()
            && types.len() == rows;
        if !in_range {
            return Err(Error::Internal("embed_layernorm: a token id, type or position outside its table".into()));
        }
        let mut o = w(out)?;
        let o = o
            .get_mut(..len_of(&[rows, e.cols], "embed_layernorm")?)
            .ok_or_else(|| Error::Internal("embed_layernorm: output".into()))?;
        let ln = (&r(e.ln.gamma)?[..], &r(e.ln.beta)?[..], e.ln.eps);
        super::embed_layernorm((&word, &pos, &ty), &ids, &types, tokens.seq, e.position_offset, ln, e.cols, o);
        Ok(())
    }

    fn add_layernorm(&self, x: &Tensor, residual: &Tensor, rows: usize, ln: &LayerNorm<'_>) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[x], &[residual, ln.gamma, ln.beta])?;
        let (gamma, beta) = (r(ln.gamma)?, r(ln.beta)?);
        let cols = gamma.len();
        let mut x = w(x)?;
        let res = r(residual)?;
        let len = len_of(&[rows, cols], "add_layernorm")?;
        let (x, res) = match (x.get_mut(..len), res.get(..len)) {
            (Some(x), Some(res)) => (x, res),
            _ => return Err(Error::Internal("add_layernorm: shape".into())),
        };
        super::add_layernorm(x, res, cols, (&gamma, &beta, ln.eps));
        Ok(())
    }

    fn attention(&self, qkv: &Tensor, lens: &Indices, s: AttentionShape, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[qkv])?;
        let (qkv, lens) = (r(qkv)?, ri(lens)?);
        let rows = len_of(&[s.batch, s.seq], "attention")?;
        let h = len_of(&[s.heads, s.head_dim], "attention")?;
        if !super::holds(qkv.len(), &[rows, 3, h]) || lens.len() < s.batch || lens.iter().any(|&l| l as usize > s.seq) {
            return Err(Error::Internal("attention: shape".into()));
        }
        let mut o = w(out)?;
        let o =
            o.get_mut(..len_of(&[rows, h], "attention")?).ok_or_else(|| Error::Internal("attention: output".into()))?;
        super::attention(&qkv, &lens, s.batch, s.seq, s.heads, s.head_dim, s.scale, s.dropout, o)
    }

    fn pool(&self, hidden: &Tensor, lens: &Indices, s: SeqShape, mode: PoolMode, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[hidden])?;
        let (hidden, lens) = (r(hidden)?, ri(lens)?);
        if !super::holds(hidden.len(), &[s.batch, s.seq, s.cols])
            || lens.len() < s.batch
            || lens.iter().any(|&l| l as usize > s.seq)
        {
            return Err(Error::Internal("pool: shape".into()));
        }
        let mut o = w(out)?;
        let o =
            o.get_mut(..len_of(&[s.batch, s.cols], "pool")?).ok_or_else(|| Error::Internal("pool: output".into()))?;
        super::pool(&hidden, &lens, s.seq, s.cols, mode, o);
        Ok(())
    }

    fn l2_normalize(&self, x: &Tensor, rows: usize, cols: usize) -> Result<()> {
        let mut x = w(x)?;
        let x = x
            .get_mut(..len_of(&[rows, cols], "l2_normalize")?)
            .ok_or_else(|| Error::Internal("l2_normalize: shape".into()))?;
        super::l2_normalize(x, cols);
        Ok(())
    }
}
