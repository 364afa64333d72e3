//! The CPU backend: the reference every other backend is tested against, and what runs where no GPU exists.
//! Dense f64 products go through `matrixmultiply`, f32 ones through faer's GEMM (cpu_kernels::matmul); sparse products are
//! row-parallel with rayon and sum in a fixed order,
//! so results do not depend on the thread count.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use rayon::prelude::*;

use super::cpu_kernels as k;
use super::{
    check_distinct, Activation, AdamStep, AttentionShape, Backend, BackendKind, Bags, EmbeddingTables, Indices,
    LayerNorm, MatDims, OutputGrads, OutputLayer, PoolMode, RankMasks, SampledColumns, Selected, SeqShape, SgdStep,
    Tensor, TokenRows,
};
use crate::linalg::dense::Matrix;
use crate::error::{Error, Result};
use crate::linalg::sparse::Csr;

/// The CPU backend. Its resident tensors are host vectors behind read-write locks, freed with their last handle.
#[derive(Debug, Default)]
pub struct Cpu;

impl Cpu {
    pub fn new() -> Cpu {
        Cpu
    }
}

impl Backend for Cpu {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols(), a.rows()) } else { (a.rows(), a.cols()) };
        let (k2, n) = if tb { (b.cols(), b.rows()) } else { (b.rows(), b.cols()) };
        super::check_dims("gemm", k, k2)?;
        let mut c = Matrix::zeros(m, n);
        // Row-major strides; a transpose is the same buffer with its strides swapped.
        let (rsa, csa) = if ta { (1, a.cols() as isize) } else { (a.cols() as isize, 1) };
        let (rsb, csb) = if tb { (1, b.cols() as isize) } else { (b.cols() as isize, 1) };
        if a.data().len() != m * k || b.data().len() != k * n || c.data().len() != m * n {
            return Err(Error::Internal("gemm: an operand's buffer does not hold its shape".into()));
        }
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: the pointers and strides describe the m×k, k×n and m×n matrices held by `a`, `b` and `c`.
            // A `Matrix` always holds rows × cols values (private fields, checked constructors: src/dense.rs), the
            // inner dimensions are checked above and `c` was made m×n here; the lengths are checked once more.
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.data().as_ptr(),
                    rsa,
                    csa,
                    b.data().as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    c.data_mut().as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        Ok(c)
    }

    fn gram_csr(&self, x: &Csr) -> Result<Matrix> {
        // Each thread owns a block of output rows a and scans every input row for entries in its block: no
        // shared writes, and each output sums over input rows in row order.
        let p = x.cols;
        let mut out = Matrix::zeros(p, p);
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
        out.data_mut().par_chunks_mut(block * p).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                for i in start..idx.len() {
                    let a = idx[i] as usize;
                    if a >= hi {
                        break;
                    }
                    let va = val[i];
                    let row = &mut chunk[(a - lo) * p..(a - lo + 1) * p];
                    for (&b, &vb) in idx.iter().zip(val) {
                        row[b as usize] += va * vb;
                    }
                }
            }
        });
        Ok(out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        // Row i scattered into a dense vector, then gathered against every row j ≤ i; mirrored afterwards.
        let n = x.rows;
        let mut out = Matrix::zeros(n, n);
        out.data_mut().par_chunks_mut(n.max(1)).enumerate().for_each_init(
            || vec![0.0f64; x.cols],
            |dense, (i, row)| {
                let (ia, va) = x.row(i);
                for (&c, &v) in ia.iter().zip(va) {
                    dense[c as usize] = v;
                }
                for (j, slot) in row.iter_mut().enumerate().take(i + 1) {
                    let (ib, vb) = x.row(j);
                    *slot = ib.iter().zip(vb).map(|(&c, &v)| dense[c as usize] * v).sum();
                }
                for &c in ia {
                    dense[c as usize] = 0.0;
                }
            },
        );
        for i in 0..n {
            for j in i + 1..n {
                out.data_mut()[i * n + j] = out.data()[j * n + i];
            }
        }
        Ok(out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_mul", x.cols, b.rows())?;
        Ok(csr_times_dense(x, b))
    }

    fn csr_mul_minus_outer(&self, x: &Csr, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Result<Matrix> {
        super::check_dims("csr_mul_minus_outer", x.cols, b.rows())?;
        super::check_outer(x.rows, b.cols(), a, s)?;
        Ok(csr_times_dense_minus_outer(x, b, a, s))
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_t_mul", x.rows, b.rows())?;
        // Each thread owns a block of output rows (columns of X) and scans every row of X for entries in its
        // block: no transpose, no shared writes, and every output sums over X's rows in order.
        let (p, k) = (x.cols, b.cols());
        let mut out = Matrix::zeros(p, k);
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 2).max(1);
        out.data_mut().par_chunks_mut((block * k).max(1)).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                let brow = b.row(r);
                for (&c, &v) in idx[start..].iter().zip(&val[start..]) {
                    let c = c as usize;
                    if c >= hi {
                        break;
                    }
                    k::axpy_f64(&mut chunk[(c - lo) * k..(c - lo + 1) * k], v, brow);
                }
            }
        });
        Ok(out)
    }

    fn csr_gram_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_gram_mul", x.cols, b.rows())?;
        Ok(csr_gram_times_dense(x, b))
    }

    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        Ok(Tensor::new(data.len(), RwLock::new(data.to_vec())))
    }

    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        let mut v = w(t)?;
        if v.len() < data.len() {
            return Err(Error::Internal(format!("cpu backend: write of {} values into {}", data.len(), v.len())));
        }
        v[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(r(t)?.clone())
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        Ok(Indices::new(capacity, RwLock::new(vec![0u32; capacity])))
    }

    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()> {
        {
            let mut v = t
                .storage::<U>("cpu")?
                .write()
                .map_err(|_| Error::Internal("cpu backend: an index buffer poisoned by a panic".into()))?;
            if data.len() > v.len() {
                return Err(Error::Internal(format!(
                    "cpu backend: {} indices into a buffer of {}",
                    data.len(),
                    v.len()
                )));
            }
            v[..data.len()].copy_from_slice(data);
        }
        t.set_len(data.len());
        Ok(())
    }

    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[dst], &[src])?;
        let from = r(src)?;
        let mut out = w(dst)?;
        let from =
            from.get(src_offset..src_offset + len).ok_or_else(|| Error::Internal("copy: source range".into()))?;
        out.get_mut(dst_offset..dst_offset + len)
            .ok_or_else(|| Error::Internal("copy: destination range".into()))?
            .copy_from_slice(from);
        Ok(())
    }

    fn matmul(&self, a: &Tensor, ta: bool, b: &Tensor, tb: bool, c: &Tensor, dims: MatDims, beta: f32) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[c], &[a, b])?;
        k::matmul(&r(a)?, ta, &r(b)?, tb, &mut w(c)?, dims, beta)
    }

    fn embedding_bag(&self, table: &Tensor, dim: usize, bags: &Bags<'_>, mean: bool, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[table, bags.weights])?;
        let mut out = w(out)?;
        let out = out.get_mut(..bags.bags * dim).ok_or_else(|| Error::Internal("embedding_bag: output".into()))?;
        k::embedding_bag(&r(table)?, dim, &ri(bags.items)?, &ri(bags.offsets)?, &r(bags.weights)?, mean, out);
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
        k::embedding_bag_backward(
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
        let mut x = w(x)?;
        let x = x.get_mut(..rows * cols).ok_or_else(|| Error::Internal("bias_act: shape".into()))?;
        k::bias_act(x, &r(bias)?, cols, act);
        Ok(())
    }

    fn relu_backward(&self, grad: &Tensor, activation: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[grad], &[activation])?;
        k::relu_backward(&mut w(grad)?, &r(activation)?);
        Ok(())
    }

    fn column_sums(&self, x: &Tensor, rows: usize, cols: usize, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[x])?;
        k::column_sums(&r(x)?, rows, cols, &mut w(out)?);
        Ok(())
    }

    fn output_layer_xent(&self, layer: &OutputLayer<'_>, grads: &OutputGrads<'_>) -> Result<()> {
        let OutputGrads { logits, losses, weight, bias, pre } = *grads;
        check_distinct(BackendKind::Cpu, &[logits, losses, weight, bias, pre], &[layer.pre, layer.weight, layer.bias])?;
        let (x, wt, b, t) = (r(layer.pre)?, r(layer.weight)?, r(layer.bias)?, ri(layer.targets)?);
        let (mut l, mut ls, mut dw, mut db, mut dp) = (w(logits)?, w(losses)?, w(weight)?, w(bias)?, w(pre)?);
        let operands = k::OutputLayerIn { pre: &x, w: &wt, bias: &b, targets: &t, d: layer.dims };
        let results = k::OutputLayerOut {
            logits: &mut l,
            losses: &mut ls,
            w_grad: &mut dw,
            bias_grad: &mut db,
            pre_grad: &mut dp,
        };
        k::output_layer_xent(operands, results)
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
        let out = out.get_mut(..rows * cols).ok_or_else(|| Error::Internal("softmax_xent: shape".into()))?;
        let l = l.get_mut(..rows).ok_or_else(|| Error::Internal("softmax_xent: losses".into()))?;
        k::softmax_xent(out, &ri(targets)?, cols, l);
        Ok(())
    }

    fn gather(&self, src: &Tensor, idx: &Indices, width: usize, stride: (usize, usize), dst: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[dst], &[src])?;
        let (src, idx, mut dst) = (r(src)?, ri(idx)?, w(dst)?);
        let last = |i: u32| i as usize * stride.0 + width.saturating_sub(1) * stride.1;
        if dst.len() < idx.len() * width || (width > 0 && idx.iter().any(|&i| last(i) >= src.len())) {
            return Err(Error::Internal("gather: an index outside the source, or a short destination".into()));
        }
        k::gather(&src, &idx, width, stride, &mut dst);
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
        k::sampled_softmax_xent(&mut x, rows, n, &bias, &log_q, &shared, &targets, &mut l, &mut g[..n]);
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
        k::adam_selected(
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
        k::adam(&mut w(param)?, &r(grad)?, &mut w(m)?, &mut w(v)?, step);
        Ok(())
    }

    fn sgd(&self, param: &Tensor, grad: &Tensor, velocity: &Tensor, step: SgdStep) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[param, velocity], &[grad])?;
        k::sgd(&mut w(param)?, &r(grad)?, &mut w(velocity)?, step.lr, step.momentum, step.weight_decay);
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
        k::target_ranks(&r(scores)?, cols, &t, &mi, &mo, out);
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
        k::rank_and_loss(&r(pre)?, &r(w2)?, item_major, &r(bias)?, d, &t, &mi, &mo, &mut rk, &mut ls)
    }

    fn cosine_top_k(&self, x: &Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let x = r(x)?;
        let x = x.get(..n * dim).ok_or_else(|| Error::Internal("cosine_top_k: shape".into()))?;
        k::cosine_top_k(x, n, dim, k)
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
        let o = o.get_mut(..rows * e.cols).ok_or_else(|| Error::Internal("embed_layernorm: output".into()))?;
        let ln = (&r(e.ln.gamma)?[..], &r(e.ln.beta)?[..], e.ln.eps);
        k::embed_layernorm((&word, &pos, &ty), &ids, &types, tokens.seq, e.position_offset, ln, e.cols, o);
        Ok(())
    }

    fn add_layernorm(&self, x: &Tensor, residual: &Tensor, rows: usize, ln: &LayerNorm<'_>) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[x], &[residual, ln.gamma, ln.beta])?;
        let (gamma, beta) = (r(ln.gamma)?, r(ln.beta)?);
        let cols = gamma.len();
        let mut x = w(x)?;
        let res = r(residual)?;
        let (x, res) = match (x.get_mut(..rows * cols), res.get(..rows * cols)) {
            (Some(x), Some(res)) => (x, res),
            _ => return Err(Error::Internal("add_layernorm: shape".into())),
        };
        k::add_layernorm(x, res, cols, (&gamma, &beta, ln.eps));
        Ok(())
    }

    fn attention(&self, qkv: &Tensor, lens: &Indices, s: AttentionShape, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[qkv])?;
        let (qkv, lens) = (r(qkv)?, ri(lens)?);
        let rows = s.batch * s.seq;
        let h = s.heads * s.head_dim;
        if qkv.len() < rows * 3 * h || lens.len() < s.batch || lens.iter().any(|&l| l as usize > s.seq) {
            return Err(Error::Internal("attention: shape".into()));
        }
        let mut o = w(out)?;
        let o = o.get_mut(..rows * h).ok_or_else(|| Error::Internal("attention: output".into()))?;
        k::attention(&qkv, &lens, s.batch, s.seq, s.heads, s.head_dim, s.scale, o)
    }

    fn pool(&self, hidden: &Tensor, lens: &Indices, s: SeqShape, mode: PoolMode, out: &Tensor) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[out], &[hidden])?;
        let (hidden, lens) = (r(hidden)?, ri(lens)?);
        if hidden.len() < s.batch * s.seq * s.cols || lens.len() < s.batch || lens.iter().any(|&l| l as usize > s.seq) {
            return Err(Error::Internal("pool: shape".into()));
        }
        let mut o = w(out)?;
        let o = o.get_mut(..s.batch * s.cols).ok_or_else(|| Error::Internal("pool: output".into()))?;
        k::pool(&hidden, &lens, s.seq, s.cols, mode, o);
        Ok(())
    }

    fn l2_normalize(&self, x: &Tensor, rows: usize, cols: usize) -> Result<()> {
        let mut x = w(x)?;
        let x = x.get_mut(..rows * cols).ok_or_else(|| Error::Internal("l2_normalize: shape".into()))?;
        k::l2_normalize(x, cols);
        Ok(())
    }
}

/// The CPU backend's tensor and index storage.
type F = RwLock<Vec<f32>>;
type U = RwLock<Vec<u32>>;

fn poisoned<T>(_: T) -> Error {
    Error::Internal("cpu backend: a tensor poisoned by a panic".into())
}

fn r(t: &Tensor) -> Result<RwLockReadGuard<'_, Vec<f32>>> {
    t.storage::<F>("cpu")?.read().map_err(poisoned)
}

fn w(t: &Tensor) -> Result<RwLockWriteGuard<'_, Vec<f32>>> {
    t.storage::<F>("cpu")?.write().map_err(poisoned)
}

/// The used part of an index buffer.
fn ri(t: &Indices) -> Result<IndexView<'_>> {
    Ok(IndexView { guard: t.storage::<U>("cpu")?.read().map_err(poisoned)?, len: t.len() })
}

struct IndexView<'a> {
    guard: RwLockReadGuard<'a, Vec<u32>>,
    len: usize,
}

impl std::ops::Deref for IndexView<'_> {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.guard[..self.len.min(self.guard.len())]
    }
}

fn csr_times_dense(x: &Csr, b: &Matrix) -> Matrix {
    csr_rows_in_blocks(x, b, |_, _| {})
}

/// `X·B − a·sᵀ`: each block of rows takes the term off while it is still in cache.
fn csr_times_dense_minus_outer(x: &Csr, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Matrix {
    csr_rows_in_blocks(x, b, |first, rows| super::subtract_outer(rows, first, a, s))
}

/// `X·B` in blocks of 256 rows on every core, `then(first row, block)` applied to each block after its product.
fn csr_rows_in_blocks(x: &Csr, b: &Matrix, then: impl Fn(usize, &mut [f64]) + Sync) -> Matrix {
    let k = b.cols();
    let mut out = Matrix::zeros(x.rows, k);
    const ROWS: usize = 256;
    out.data_mut().par_chunks_mut((ROWS * k).max(1)).enumerate().for_each(|(c, rows)| {
        k::csr_rows_times_dense(x, b.data(), k, c * ROWS, rows);
        then(c * ROWS, rows);
    });
    out
}

/// Accumulators of [`csr_gram_times_dense`], kept between the calls of one PCA fit (a fresh multi-megabyte
/// allocation per product cost page faults and TLB shootdowns: a fifth of the time on 500,000 × 20,000).
static GRAM_SCRATCH: std::sync::Mutex<Vec<f64>> = std::sync::Mutex::new(Vec::new());

/// Frees the accumulators kept for `XᵀX·B` (PCA calls it when its fit ends).
pub fn release_scratch() {
    if let Ok(mut s) = GRAM_SCRATCH.lock() {
        *s = Vec::new();
    }
}

/// `XᵀX·B` in one pass over X: each row's `xᵣᵀB` (k wide), scattered straight back along the row. The rows are cut
/// into chunks of equal non-zeros, each with its own p×k accumulator, summed in chunk order; their number depends
/// on the shape only (at most 4, and under 256 MB of accumulators), so the result does not depend on the threads.
fn csr_gram_times_dense(x: &Csr, b: &Matrix) -> Matrix {
    let (p, k) = (x.cols, b.cols());
    let size = (p * k).max(1);
    let chunks = ((256usize << 20) / (size * 8)).clamp(1, 4).min(x.rows.max(1));
    let mut bounds: Vec<usize> =
        (0..=chunks).map(|c| x.indptr.partition_point(|&e| e < x.nnz() * c / chunks).min(x.rows)).collect();
    bounds[chunks] = x.rows;
    let mut guard = GRAM_SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.resize(chunks * size, 0.0);
    guard.par_chunks_mut(size).take(chunks).enumerate().for_each(|(c, acc)| {
        acc.fill(0.0);
        let mut t = vec![0.0; k];
        k::csr_rows_gram_dense(x, b.data(), k, bounds[c]..bounds[c + 1].max(bounds[c]), &mut t, acc);
    });
    let mut out = guard[..size].to_vec();
    for part in guard[size..chunks * size].chunks(size) {
        out.iter_mut().zip(part).for_each(|(o, v)| *o += v);
    }
    out.truncate(p * k);
    Matrix::from_vec(p, k, out).unwrap_or_else(|_| Matrix::zeros(p, k))
}

/// The CSR form of the transpose (a CSC view of `x`), columns ascending within each row.
pub fn transpose(x: &Csr) -> Csr {
    let mut counts = vec![0usize; x.cols + 1];
    for &c in &x.indices {
        counts[c as usize + 1] += 1;
    }
    for i in 0..x.cols {
        counts[i + 1] += counts[i];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0u32; x.nnz()];
    let mut values = vec![0.0; x.nnz()];
    for r in 0..x.rows {
        let (idx, val) = x.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            let at = next[c as usize];
            indices[at] = r as u32;
            values[at] = v;
            next[c as usize] += 1;
        }
    }
    Csr { rows: x.cols, cols: x.rows, indptr, indices, values }
}
