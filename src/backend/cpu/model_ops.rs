//! [`ModelOps`] on the CPU: each operation checks its operands and runs its kernel on the tensors' slices.

use super::len_of;
use super::{r, ri, w};
use crate::backend::ops::*;
use crate::backend::{
    check_distinct, Activation, AdamStep, BackendKind, Bags, Indices, MatDims, OutputGrads, OutputLayer, RankMasks,
    SampledColumns, Selected, SgdStep, Tensor,
};
use crate::error::{Error, Result};

impl ModelOps for super::Cpu {
    fn matmul(&self, a: &Tensor, ta: bool, b: &Tensor, tb: bool, c: &Tensor, dims: MatDims, beta: f32) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[c], &[a, b])?;
        super::matmul(&r(a)?, ta, &r(b)?, tb, &mut w(c)?, dims, beta)
    }

    fn embedding_bag(&self, table: &Tensor, dim: usize, bags: &Bags<'_>, mean: bool, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[table, bags.weights])?;
        let mut out = w(out)?;
        let out = out
            .get_mut(..len_of(&[bags.bags, dim], "embedding_bag")?)
            .ok_or_else(|| Error::Internal("embedding_bag: output".into()))?;
        super::embedding_bag(&r(table)?, dim, &ri(bags.items)?, &ri(bags.offsets)?, &r(bags.weights)?, mean, out);
        Ok(())
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
        check_distinct(BackendKind::Cpu, &[grad], &[d_pooled, bags.weights, bags.seg_weights])?;
        super::embedding_bag_backward(
            &r(d_pooled)?,
            dim,
            &ri(bags.offsets)?,
            &r(bags.weights)?,
            &ri(bags.seg_items)?,
            &ri(bags.seg_offsets)?,
            &ri(bags.seg_examples)?,
            &r(bags.seg_weights)?,
            mean,
            &mut w(grad)?,
            zero_others,
        );
        Ok(())
    }

    fn bias_act(&self, x: &Tensor, bias: &Tensor, rows: usize, cols: usize, act: Activation) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[x], &[bias])?;
        let (mut x, bias) = (w(x)?, r(bias)?);
        let len = rows.checked_mul(cols).filter(|_| bias.len() >= cols);
        let x = len.and_then(|len| x.get_mut(..len)).ok_or_else(|| Error::Internal("bias_act: shape".into()))?;
        super::bias_act(x, &bias, cols, act);
        Ok(())
    }

    fn relu_backward(&self, grad: &Tensor, activation: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[grad], &[activation])?;
        super::relu_backward(&mut w(grad)?, &r(activation)?);
        Ok(())
    }

    fn column_sums(&self, x: &Tensor, rows: usize, cols: usize, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[x])?;
        super::column_sums(&r(x)?, rows, cols, &mut w(out)?);
        Ok(())
    }

    fn output_layer_xent(&self, layer: &OutputLayer<'_>, grads: &OutputGrads<'_>) -> Result<()> {
        let OutputGrads { logits, losses, weight, bias, pre } = *grads;
        check_distinct(BackendKind::Cpu, &[logits, losses, weight, bias, pre], &[layer.pre, layer.weight, layer.bias])?;
        let (x, wt, b, t) = (r(layer.pre)?, r(layer.weight)?, r(layer.bias)?, ri(layer.targets)?);
        let (mut l, mut ls, mut dw, mut db, mut dp) = (w(logits)?, w(losses)?, w(weight)?, w(bias)?, w(pre)?);
        let operands = super::OutputLayerIn { pre: &x, w: &wt, bias: &b, targets: &t, d: layer.dims };
        let results = super::OutputLayerOut {
            logits: &mut l,
            losses: &mut ls,
            w_grad: &mut dw,
            bias_grad: &mut db,
            pre_grad: &mut dp,
        };
        super::output_layer_xent(operands, results)
    }

    fn softmax_xent(
        &self,
        logits: &Tensor,
        targets: &Indices,
        rows: usize,
        cols: usize,
        losses: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[logits, losses], &[])?;
        let (mut l, mut out) = (w(losses)?, w(logits)?);
        let out = out
            .get_mut(..len_of(&[rows, cols], "softmax_xent")?)
            .ok_or_else(|| Error::Internal("softmax_xent: shape".into()))?;
        let l = l.get_mut(..rows).ok_or_else(|| Error::Internal("softmax_xent: losses".into()))?;
        super::softmax_xent(out, &ri(targets)?, cols, l);
        Ok(())
    }

    fn gather(&self, src: &Tensor, idx: &Indices, width: usize, stride: (usize, usize), dst: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[dst], &[src])?;
        let (src, idx, mut dst) = (r(src)?, ri(idx)?, w(dst)?);
        let last = |i: u32| i as usize * stride.0 + width.saturating_sub(1) * stride.1;
        if dst.len() < idx.len() * width
            || (width > 0 && idx.iter().any(|&i| i != crate::backend::NO_ROW && last(i) >= src.len()))
        {
            return Err(Error::Internal("gather: an index outside the source, or a short destination".into()));
        }
        super::gather(&src, &idx, width, stride, &mut dst);
        Ok(())
    }

    fn sampled_softmax_xent(
        &self,
        logits: &Tensor,
        rows: usize,
        c: &SampledColumns<'_>,
        losses: &Tensor,
        bias_grad: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[logits, losses, bias_grad], &[c.bias, c.log_q, c.shared])?;
        c.check_lengths(rows, logits, losses, bias_grad)?;
        let (bias, log_q, shared, targets) = (r(c.bias)?, r(c.log_q)?, r(c.shared)?, ri(c.targets)?);
        let (mut x, mut l, mut g) = (w(logits)?, w(losses)?, w(bias_grad)?);
        let n = c.count;
        if targets[..rows].iter().any(|&t| t as usize >= n) {
            return Err(Error::Internal("sampled_softmax_xent: a target column outside the candidates".into()));
        }
        super::sampled_softmax_xent(&mut x, rows, n, &bias, &log_q, &shared, &targets, &mut l, &mut g[..n]);
        Ok(())
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
        check_distinct(BackendKind::Cpu, &[param, m, v], &[grad])?;
        let idx = ri(sel.idx)?;
        let (mut p, g, mut mm, mut vv) = (w(param)?, r(grad)?, w(m)?, w(v)?);
        let last = |i: usize, (a, b): (usize, usize)| i * a + sel.width.saturating_sub(1) * b;
        let fits = idx.iter().enumerate().all(|(j, &i)| {
            let gi = if sel.grad_by_index { i as usize } else { j };
            last(i as usize, sel.param_stride) < p.len().min(mm.len()).min(vv.len())
                && last(gi, sel.grad_stride) < g.len()
        });
        if !fits {
            return Err(Error::Internal("adam_selected: an index outside the parameter or gradient".into()));
        }
        super::adam_selected(
            &mut p,
            &g,
            &mut mm,
            &mut vv,
            &idx,
            sel.width,
            sel.param_stride,
            sel.grad_stride,
            sel.grad_by_index,
            step,
        );
        Ok(())
    }

    fn adam(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, step: AdamStep) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[param, m, v], &[grad])?;
        super::adam(&mut w(param)?, &r(grad)?, &mut w(m)?, &mut w(v)?, step);
        Ok(())
    }

    fn sgd(&self, param: &Tensor, grad: &Tensor, velocity: &Tensor, step: SgdStep) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[param, velocity], &[grad])?;
        super::sgd(&mut w(param)?, &r(grad)?, &mut w(velocity)?, step.lr, step.momentum, step.weight_decay);
        Ok(())
    }

    fn target_ranks(
        &self,
        scores: &Tensor,
        rows: usize,
        cols: usize,
        masks: &RankMasks<'_>,
        ranks: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[ranks], &[scores])?;
        let mut out = w(ranks)?;
        let out = out.get_mut(..rows).ok_or_else(|| Error::Internal("target_ranks: ranks".into()))?;
        let (t, mi, mo) = (ri(masks.targets)?, ri(masks.mask_items)?, ri(masks.mask_offsets)?);
        super::target_ranks(&r(scores)?, cols, &t, &mi, &mo, out);
        Ok(())
    }

    fn rank_and_loss(
        &self,
        pre: &Tensor,
        w2: &Tensor,
        item_major: bool,
        bias: &Tensor,
        d: MatDims,
        masks: &RankMasks<'_>,
        _logits: &Tensor,
        ranks: &Tensor,
        losses: &Tensor,
    ) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[ranks, losses], &[pre, w2, bias])?;
        let (mut rk, mut ls) = (w(ranks)?, w(losses)?);
        let (t, mi, mo) = (ri(masks.targets)?, ri(masks.mask_items)?, ri(masks.mask_offsets)?);
        super::rank_and_loss(&r(pre)?, &r(w2)?, item_major, &r(bias)?, d, &t, &mi, &mo, &mut rk, &mut ls)
    }

    fn cosine_top_k(&self, x: &Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let x = r(x)?;
        let x =
            x.get(..len_of(&[n, dim], "cosine_top_k")?).ok_or_else(|| Error::Internal("cosine_top_k: shape".into()))?;
        super::cosine_top_k(x, n, dim, k)
    }
}
