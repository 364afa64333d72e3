//! The Transformer encoder's kernels (BERT family): embeddings and LayerNorm, residual and LayerNorm, masked
//! attention, pooling and l2 normalisation; the CPU twins of shaders/encoder.wgsl.

use rayon::prelude::*;

use super::gemm::{gemm_seq, SendPtr};
use super::holds;
use super::simd::*;
use crate::backend::PoolMode;
use crate::error::{Error, Result};

/// LayerNorm of one row in place (mean and variance summed in f64).
pub fn layernorm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = ((f64::from(*v) - mean) * inv) as f32 * g + b;
    }
}

/// `out[r] = LayerNorm(word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]])`, rows of width `cols`.
#[allow(clippy::too_many_arguments)]
pub fn embed_layernorm(
    (word, pos, types): (&[f32], &[f32], &[f32]),
    ids: &[u32],
    type_ids: &[u32],
    seq: usize,
    offset: usize,
    (gamma, beta, eps): (&[f32], &[f32], f32),
    cols: usize,
    out: &mut [f32],
) {
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(r, row)| {
        let (id, ty, t) = (ids[r] as usize, type_ids[r] as usize, r % seq.max(1) + offset);
        for (c, v) in row.iter_mut().enumerate() {
            *v = word[id * cols + c] + pos[t * cols + c] + types[ty * cols + c];
        }
        layernorm_row(row, gamma, beta, eps);
    });
}

/// `x[r] = LayerNorm(x[r] + res[r])` for rows of width `cols`.
pub fn add_layernorm(x: &mut [f32], res: &[f32], cols: usize, (gamma, beta, eps): (&[f32], &[f32], f32)) {
    x.par_chunks_mut(cols.max(1)).zip(res.par_chunks(cols.max(1))).for_each(|(row, r)| {
        for (v, &a) in row.iter_mut().zip(r) {
            *v += a;
        }
        layernorm_row(row, gamma, beta, eps);
    });
}

/// Multi-head self-attention with the padding mask. `qkv` rows (b·seq + t) are [q | k | v], each `heads·head_dim`
/// wide; `out` rows are the heads' weighted sums side by side. Keys past `lens[b]` are masked; scores are scaled by
/// `scale`. Per sequence and head: S = Q·Kᵀ over the real keys (seq × len), a stable softmax per row, O = P·V,
/// both products through [`matmul`] (so results do not depend on the thread count); sequences run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32],
    lens: &[u32],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    dropout: Option<crate::backend::Dropout>,
    out: &mut [f32],
) -> Result<()> {
    use faer::{Accum, MatMut, MatRef};
    if batch == 0 || seq == 0 || heads == 0 || head_dim == 0 {
        return Ok(());
    }
    if !holds(qkv.len(), &[batch, seq, 3, heads, head_dim])
        || !holds(out.len(), &[batch, seq, heads, head_dim])
        || lens.len() < batch
    {
        return Err(Error::Internal(format!(
            "attention: {} qkv values, {} outputs and {} lengths for {batch} sequences of {seq} × {heads} heads of {head_dim}",
            qkv.len(),
            out.len(),
            lens.len()
        )));
    }
    let h_all = heads * head_dim;
    let width = 3 * h_all;
    // One task per (sequence, head): S = Q·Kᵀ over the real keys, softmax by row, O = S·V, read from and written to
    // their strided columns in place (no copies of Q, K, V). Each task is one single-threaded product pair, so the
    // result does not depend on the thread count.
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(Vec::new, |s, bh| {
        let (b, h) = (bh / heads, bh % heads);
        let len = (lens[b] as usize).min(seq);
        let part = |p: usize, rows: usize| {
            let at = b * seq * width + p * h_all + h * head_dim;
            MatRef::from_row_major_slice_with_stride(
                &qkv[at..at + (rows - 1) * width + head_dim],
                rows,
                head_dim,
                width,
            )
        };
        let out_ptr = &out_ptr;
        // SAFETY: out holds batch·seq·h_all values (checked above with checked arithmetic); this view is sequence
        // b's rows, head h's columns, with row stride h_all, inside it; the (b, h) tasks' views are disjoint.
        let o = unsafe {
            MatMut::from_raw_parts_mut(out_ptr.0.add(b * seq * h_all + h * head_dim), seq, head_dim, h_all as isize, 1)
        };
        if len == 0 {
            // No real token: nothing to attend to (a batch pads every sequence to at least one token).
            let mut o = o;
            o.fill(0.0);
            return;
        }
        s.resize(seq * len, 0f32);
        let q = part(0, seq);
        let (k, v) = (part(1, len), part(2, len));
        gemm_seq(MatMut::from_row_major_slice_mut(s, seq, len), Accum::Replace, q, k.transpose(), scale);
        s.chunks_mut(len).for_each(softmax_row);
        if let Some(d) = &dropout {
            // Training: the probabilities' dropout, value (i, j) at index ((b·heads + h)·seq + i)·seq + j.
            for (i, row) in s.chunks_mut(len).enumerate() {
                crate::backend::dropout::apply(row, ((bh * seq + i) * seq) as u32, d);
            }
        }
        gemm_seq(o, Accum::Replace, MatRef::from_row_major_slice(s, seq, len), v, 1.0f32);
    });
    Ok(())
}

multiversion!(fn softmax_row / softmax_row_generic(row: &mut [f32]));

/// Softmax of one row of scores in place (see `exp_shifted`).
#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let (_, sum) = exp_shifted(row);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Pools each sequence's real tokens: `hidden` (batch·seq × cols) into `out` (batch × cols).
pub fn pool(hidden: &[f32], lens: &[u32], seq: usize, cols: usize, mode: PoolMode, out: &mut [f32]) {
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(b, o)| {
        let len = lens[b] as usize;
        let token = |t: usize| &hidden[(b * seq + t) * cols..(b * seq + t + 1) * cols];
        match mode {
            PoolMode::Cls => o.copy_from_slice(token(0)),
            PoolMode::Mean => {
                for (c, v) in o.iter_mut().enumerate() {
                    let s: f64 = (0..len).map(|t| f64::from(token(t)[c])).sum();
                    *v = (s / len.max(1) as f64) as f32;
                }
            }
            PoolMode::Max => {
                for (c, v) in o.iter_mut().enumerate() {
                    *v = (0..len).map(|t| token(t)[c]).fold(f32::MIN, f32::max);
                }
            }
        }
    });
}

/// Scales each row of width `cols` to unit l2 norm (as torch.nn.functional.normalize, eps 1e-12).
pub fn l2_normalize(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols.max(1)).for_each(|row| {
        let n = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        let inv = 1.0 / n.max(1e-12);
        row.iter_mut().for_each(|v| *v = (f64::from(*v) * inv) as f32);
    });
}
