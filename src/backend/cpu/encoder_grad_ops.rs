//! [`EncoderGradOps`] on the CPU: each operation checks its operands and runs its kernel on the tensors' slices.

use super::encoder_grad::{self as k, AttnDims};
use super::len_of;
use super::{r, ri, w};
use crate::backend::ops::*;
use crate::backend::{
    check_distinct, Activation, AdamWStep, AttentionShape, BackendKind, Dropout, EmbeddingTables, Indices, LayerNorm,
    PoolMode, SeqShape, Tensor, TokenRows,
};
use crate::error::{Error, Result};

/// `t[..len]` of a guard, or an internal error naming the operation.
fn front<'a>(v: &'a [f32], len: usize, op: &str) -> Result<&'a [f32]> {
    v.get(..len).ok_or_else(|| Error::Internal(format!("{op}: an operand shorter than its shape")))
}

fn front_mut<'a>(v: &'a mut [f32], len: usize, op: &str) -> Result<&'a mut [f32]> {
    v.get_mut(..len).ok_or_else(|| Error::Internal(format!("{op}: an output shorter than its shape")))
}

impl EncoderGradOps for super::Cpu {
    fn embed_sum(&self, e: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[e.word, e.position, e.token_type])?;
        let (ids, types) = (ri(tokens.ids)?, ri(tokens.type_ids)?);
        let rows = ids.len();
        let (word, pos, ty) = (r(e.word)?, r(e.position)?, r(e.token_type)?);
        let last_pos = (rows.min(tokens.seq).max(1) - 1 + e.position_offset + 1) * e.cols;
        let in_range = ids.iter().all(|&i| (i as usize + 1) * e.cols <= word.len())
            && types.iter().all(|&t| (t as usize + 1) * e.cols <= ty.len())
            && last_pos <= pos.len()
            && types.len() == rows;
        if !in_range {
            return Err(Error::Internal("embed_sum: a token id, type or position outside its table".into()));
        }
        let mut o = w(out)?;
        let o = front_mut(&mut o, len_of(&[rows, e.cols], "embed_sum")?, "embed_sum")?;
        k::embed_sum((&word, &pos, &ty), &ids, &types, (tokens.seq, e.position_offset), e.cols, o);
        Ok(())
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
        check_distinct(BackendKind::Cpu, &[pre, out], &inputs)?;
        let (gamma, beta) = (r(ln.gamma)?, r(ln.beta)?);
        let len = len_of(&[rows, gamma.len()], "layernorm_keep")?;
        let res = residual.map(r).transpose()?;
        let res = res.as_deref().map(|v| front(v, len, "layernorm_keep")).transpose()?;
        let (mut p, mut o) = (w(pre)?, w(out)?);
        let (p, o) = (front_mut(&mut p, len, "layernorm_keep")?, front_mut(&mut o, len, "layernorm_keep")?);
        k::layernorm_keep(p, res, gamma.len(), (&gamma, &beta, ln.eps), o);
        Ok(())
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
        check_distinct(BackendKind::Cpu, &[dx, dy_xhat], &[pre, dy, ln.gamma])?;
        let gamma = r(ln.gamma)?;
        let len = len_of(&[rows, gamma.len()], "layernorm_backward")?;
        let (p, d) = (r(pre)?, r(dy)?);
        let (mut o, mut o2) = (w(dx)?, w(dy_xhat)?);
        let op = "layernorm_backward";
        k::layernorm_backward(
            front(&p, len, op)?,
            front(&d, len, op)?,
            gamma.len(),
            (&gamma, ln.eps),
            front_mut(&mut o, len, op)?,
            front_mut(&mut o2, len, op)?,
        );
        Ok(())
    }

    fn activation(&self, pre: &Tensor, out: &Tensor, len: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[pre])?;
        let (p, mut o) = (r(pre)?, w(out)?);
        k::activation(front(&p, len, "activation")?, front_mut(&mut o, len, "activation")?, act);
        Ok(())
    }

    fn activation_backward(&self, pre: &Tensor, grad: &Tensor, len: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[grad], &[pre])?;
        let (p, mut g) = (r(pre)?, w(grad)?);
        let op = "activation_backward";
        k::activation_backward(front(&p, len, op)?, front_mut(&mut g, len, op)?, act);
        Ok(())
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
        check_distinct(BackendKind::Cpu, &[d_qkv, stats], &[qkv, d_out])?;
        let op = "attention_backward";
        let rows = len_of(&[s.batch, s.seq], op)?;
        let h = len_of(&[s.heads, s.head_dim], op)?;
        let (q, d, l) = (r(qkv)?, r(d_out)?, ri(lens)?);
        if l.len() < s.batch || l.iter().take(s.batch).any(|&n| n as usize > s.seq) {
            return Err(Error::Internal(format!("{op}: lengths")));
        }
        let (mut dq, mut st) = (w(d_qkv)?, w(stats)?);
        let dims = AttnDims {
            batch: s.batch,
            seq: s.seq,
            heads: s.heads,
            head_dim: s.head_dim,
            scale: s.scale,
            dropout: s.dropout,
        };
        k::attention_backward(
            front(&q, len_of(&[rows, 3, h], op)?, op)?,
            &l,
            dims,
            front(&d, len_of(&[rows, h], op)?, op)?,
            front_mut(&mut dq, len_of(&[rows, 3, h], op)?, op)?,
            front_mut(&mut st, len_of(&[rows, s.heads, 2], op)?, op)?,
        );
        Ok(())
    }

    fn pool_backward(
        &self,
        d_pooled: &Tensor,
        lens: &Indices,
        s: SeqShape,
        mode: PoolMode,
        d_hidden: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[d_hidden], &[d_pooled])?;
        let op = "pool_backward";
        if mode == PoolMode::Max {
            return Err(Error::Internal(format!("{op}: max pooling is not trained")));
        }
        let (d, l) = (r(d_pooled)?, ri(lens)?);
        if l.len() < s.batch {
            return Err(Error::Internal(format!("{op}: lengths")));
        }
        let mut o = w(d_hidden)?;
        let d = front(&d, len_of(&[s.batch, s.cols], op)?, op)?;
        k::pool_backward(d, &l, (s.seq, s.cols), mode, front_mut(&mut o, len_of(&[s.batch, s.seq, s.cols], op)?, op)?);
        Ok(())
    }

    fn l2_normalize_backward(&self, x: &Tensor, dy: &Tensor, rows: usize, cols: usize, dx: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[dx], &[x, dy])?;
        let op = "l2_normalize_backward";
        let len = len_of(&[rows, cols], op)?;
        let (xv, d, mut o) = (r(x)?, r(dy)?, w(dx)?);
        k::l2_normalize_backward(front(&xv, len, op)?, front(&d, len, op)?, cols, front_mut(&mut o, len, op)?);
        Ok(())
    }

    fn scale(&self, x: &Tensor, len: usize, alpha: f32) -> Result<()> {
        let mut v = w(x)?;
        k::scale(front_mut(&mut v, len, "scale")?, alpha);
        Ok(())
    }

    fn dropout(&self, x: &Tensor, len: usize, d: Dropout) -> Result<()> {
        let mut v = w(x)?;
        crate::backend::dropout::apply(front_mut(&mut v, len, "dropout")?, 0, &d);
        Ok(())
    }

    fn sum_squares(&self, x: &Tensor, len: usize) -> Result<f64> {
        Ok(k::sum_squares(front(&r(x)?, len, "sum_squares")?))
    }

    fn adamw(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, s: AdamWStep) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[param, m, v], &[grad])?;
        let (mut p, g, mut mm, mut vv) = (w(param)?, r(grad)?, w(m)?, w(v)?);
        let len = p.len();
        if g.len() < len || mm.len() < len || vv.len() < len {
            return Err(Error::Internal("adamw: a gradient or moment shorter than its parameter".into()));
        }
        k::adamw(&mut p, &g, &mut mm, &mut vv, s);
        Ok(())
    }
}
