//! The encoder's backward pass and AdamW: the CPU twins of shaders/encoder_grad.wgsl, encoder.wgsl's `embed_sum`
//! and optim.wgsl's `adamw`. Sums over a row run in f64; each value's order of operations follows its kernel's.

use rayon::prelude::*;

use super::elementwise::{activate, erf_approx};
use crate::backend::{Activation, AdamWStep, Dropout, PoolMode};

/// `out[r] = word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]]`, rows of width `cols`.
pub fn embed_sum(
    (word, pos, types): (&[f32], &[f32], &[f32]),
    ids: &[u32],
    type_ids: &[u32],
    (seq, offset): (usize, usize),
    cols: usize,
    out: &mut [f32],
) {
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(r, row)| {
        let (id, ty, t) = (ids[r] as usize, type_ids[r] as usize, r % seq.max(1) + offset);
        for (c, v) in row.iter_mut().enumerate() {
            *v = word[id * cols + c] + pos[t * cols + c] + types[ty * cols + c];
        }
    });
}

/// A row's mean and 1/√(var + eps), in f64.
fn row_stats(row: &[f32], eps: f32) -> (f64, f64) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    (mean, 1.0 / (var + f64::from(eps)).sqrt())
}

/// `pre[r] += residual[r]` (when given), then `out[r] = LayerNorm(pre[r])`.
pub fn layernorm_keep(
    pre: &mut [f32],
    residual: Option<&[f32]>,
    cols: usize,
    (gamma, beta, eps): (&[f32], &[f32], f32),
    out: &mut [f32],
) {
    let cols = cols.max(1);
    pre.par_chunks_mut(cols).zip(out.par_chunks_mut(cols)).enumerate().for_each(|(r, (p, o))| {
        if let Some(res) = residual {
            p.iter_mut().zip(&res[r * cols..(r + 1) * cols]).for_each(|(v, &a)| *v += a);
        }
        let (mean, inv) = row_stats(p, eps);
        for (((o, &v), &g), &b) in o.iter_mut().zip(p.iter()).zip(gamma).zip(beta) {
            *o = ((f64::from(v) - mean) * inv) as f32 * g + b;
        }
    });
}

/// LayerNorm's backward: `dx = (g − mean(g) − x̂·mean(g·x̂)) / σ` with `g = dy·γ`, and `dy_xhat = dy·x̂`.
pub fn layernorm_backward(
    pre: &[f32],
    dy: &[f32],
    cols: usize,
    (gamma, eps): (&[f32], f32),
    dx: &mut [f32],
    dy_xhat: &mut [f32],
) {
    let cols = cols.max(1);
    dx.par_chunks_mut(cols).zip(dy_xhat.par_chunks_mut(cols)).enumerate().for_each(|(r, (dx, dyx))| {
        let (p, d) = (&pre[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let (mean, inv) = row_stats(p, eps);
        let n = cols as f64;
        let (mut a, mut b) = (0f64, 0f64);
        for c in 0..cols {
            let xhat = (f64::from(p[c]) - mean) * inv;
            let g = f64::from(d[c]) * f64::from(gamma[c]);
            a += g;
            b += g * xhat;
        }
        let (a, b) = (a / n, b / n);
        for c in 0..cols {
            let xhat = (f64::from(p[c]) - mean) * inv;
            let g = f64::from(d[c]) * f64::from(gamma[c]);
            dx[c] = (inv * (g - a - xhat * b)) as f32;
            dyx[c] = (f64::from(d[c]) * xhat) as f32;
        }
    });
}

/// act'(x): GELU's with the erf (Φ(x) + x·φ(x)) or with tanh, ReLU's (1 above 0), identity's (1).
#[inline(always)]
pub fn activation_derivative(x: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => 1.0,
        Activation::Relu => {
            if x > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2));
            cdf + x * 0.398_942_3 * (-0.5 * x * x).exp()
        }
        Activation::GeluTanh => {
            let u = (0.797_884_6 * (x + 0.044715 * x * x * x)).clamp(-15.0, 15.0);
            let t = u.tanh();
            0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.797_884_6 * (1.0 + 3.0 * 0.044715 * x * x)
        }
    }
}

/// `out[i] = act(pre[i])`.
pub fn activation(pre: &[f32], out: &mut [f32], act: Activation) {
    out.par_chunks_mut(8192).zip(pre.par_chunks(8192)).for_each(|(o, p)| {
        o.iter_mut().zip(p).for_each(|(o, &x)| *o = activate(x, act));
    });
}

/// `grad[i] *= act'(pre[i])`.
pub fn activation_backward(pre: &[f32], grad: &mut [f32], act: Activation) {
    grad.par_chunks_mut(8192).zip(pre.par_chunks(8192)).for_each(|(g, p)| {
        g.iter_mut().zip(p).for_each(|(g, &x)| *g *= activation_derivative(x, act));
    });
}

/// A row-major view of `rows` × `cols` with rows `stride` apart. (faer 0.24.4's
/// `MatMut::from_row_major_slice_with_stride_mut` swaps the strides: it makes a column-major view.)
fn rows_with_stride(slice: &mut [f32], rows: usize, cols: usize, stride: usize) -> faer::MatMut<'_, f32> {
    faer::MatMut::from_column_major_slice_with_stride_mut(slice, cols, rows, stride).transpose_mut()
}

/// The shape of a batch's attention for its backward pass, and the dropout of its probabilities in training.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub dropout: Option<Dropout>,
}

/// Attention's backward: the same function as shaders/encoder_grad.wgsl's two passes, computed per (sequence, head)
/// with products. Over the real keys: S = scale·Q·Kᵀ, P = softmax(S) by row (its log-sum-exp kept), P̃ = P ⊙ M
/// (M: the dropout's factors, all ones without it), dP = (dO·Vᵀ) ⊙ M, D = Σ_j P·dP per row, dS = P ⊙ (dP − D),
/// dQ = scale·dS·K, dK = scale·dSᵀ·Q, dV = P̃ᵀ·dO; every query row counts, padding keys get zero gradients.
/// Sequences run in parallel, heads in order, each product single-threaded, so results do not depend on the
/// thread count. `stats` rows × heads × 2 receives each query's log-sum-exp and D.
pub fn attention_backward(qkv: &[f32], lens: &[u32], s: AttnDims, d_out: &[f32], d_qkv: &mut [f32], stats: &mut [f32]) {
    use faer::{Accum, MatMut, MatRef};
    let (seq, hd, heads) = (s.seq, s.head_dim, s.heads);
    let h_all = heads * hd;
    let width = 3 * h_all;
    let rows_per = seq * width;
    if rows_per == 0 || s.batch == 0 {
        return;
    }
    d_qkv[..s.batch * rows_per]
        .par_chunks_mut(rows_per)
        .zip(stats[..s.batch * seq * heads * 2].par_chunks_mut(seq * heads * 2))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(p, dp, pm), (b, (dq_b, st_b))| {
                let len = (lens[b] as usize).min(seq);
                dq_b.iter_mut().for_each(|v| *v = 0.0);
                st_b.iter_mut().for_each(|v| *v = 0.0);
                if len == 0 {
                    return;
                }
                let base = b * rows_per;
                let view = |at: usize, rows: usize| {
                    MatRef::from_row_major_slice_with_stride(
                        &qkv[base + at..base + at + (rows - 1) * width + hd],
                        rows,
                        hd,
                        width,
                    )
                };
                for h in 0..heads {
                    let (q, k, v) = (view(h * hd, seq), view(h_all + h * hd, len), view(2 * h_all + h * hd, len));
                    let o_at = b * seq * h_all + h * hd;
                    let d_o = MatRef::from_row_major_slice_with_stride(
                        &d_out[o_at..o_at + (seq - 1) * h_all + hd],
                        seq,
                        hd,
                        h_all,
                    );
                    p.resize(seq * len, 0f32);
                    dp.resize(seq * len, 0f32);
                    super::gemm::gemm_seq(
                        MatMut::from_row_major_slice_mut(p, seq, len),
                        Accum::Replace,
                        q,
                        k.transpose(),
                        s.scale,
                    );
                    softmax_keeping_lse(p, len, |i, lse| st_b[(i * heads + h) * 2] = lse);
                    super::gemm::gemm_seq(
                        MatMut::from_row_major_slice_mut(dp, seq, len),
                        Accum::Replace,
                        d_o,
                        v.transpose(),
                        1.0,
                    );
                    let dv_at = 2 * h_all + h * hd;
                    let dv = rows_with_stride(&mut dq_b[dv_at..], len, hd, width);
                    let first = ((b * heads + h) * seq * seq) as u32;
                    values_gradient((p, dp, pm), (seq, len), d_o, s.dropout.map(|d| (d, first)), dv);
                    softmax_backward_rows(p, dp, len, |i, dsum| st_b[(i * heads + h) * 2 + 1] = dsum);
                    let ds = MatRef::from_row_major_slice(dp, seq, len);
                    let dq = rows_with_stride(&mut dq_b[h * hd..], seq, hd, width);
                    super::gemm::gemm_seq(dq, Accum::Replace, ds, k, s.scale);
                    let dk = rows_with_stride(&mut dq_b[h_all + h * hd..], len, hd, width);
                    super::gemm::gemm_seq(dk, Accum::Replace, ds.transpose(), q, s.scale);
                }
            },
        );
}

/// dV = (P ⊙ M)ᵀ·dO into `dv`, and dP ⊙ M in `dp`'s place, for the dropout `mask` (M; its first value's index;
/// P ⊙ M is made in the scratch `pm`); without one dV = Pᵀ·dO.
fn values_gradient(
    (p, dp, pm): (&[f32], &mut [f32], &mut Vec<f32>),
    (seq, len): (usize, usize),
    d_o: faer::MatRef<'_, f32>,
    mask: Option<(Dropout, u32)>,
    dv: faer::MatMut<'_, f32>,
) {
    use faer::{Accum, MatRef};
    let Some((d, first)) = mask else {
        super::gemm::gemm_seq(dv, Accum::Replace, MatRef::from_row_major_slice(p, seq, len).transpose(), d_o, 1.0);
        return;
    };
    pm.clear();
    pm.extend_from_slice(p);
    for i in 0..seq {
        let at = first.wrapping_add((i * seq) as u32);
        crate::backend::dropout::apply(&mut pm[i * len..(i + 1) * len], at, &d);
        crate::backend::dropout::apply(&mut dp[i * len..(i + 1) * len], at, &d);
    }
    super::gemm::gemm_seq(dv, Accum::Replace, MatRef::from_row_major_slice(pm, seq, len).transpose(), d_o, 1.0);
}

/// Softmax of each `len`-wide row of scores in place; `lse(i, log-sum-exp)` receives each row's.
fn softmax_keeping_lse(p: &mut [f32], len: usize, mut lse: impl FnMut(usize, f32)) {
    for (i, row) in p.chunks_mut(len).enumerate() {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let sum: f32 = row.iter().map(|&x| (x - m).exp()).sum();
        let l = m + sum.ln();
        row.iter_mut().for_each(|x| *x = (*x - l).exp());
        lse(i, l);
    }
}

/// Softmax's backward by rows, in `dp`'s place: dS = P ⊙ (dP − D) with D = Σ_j P·dP, which `d(i, D)` receives.
fn softmax_backward_rows(p: &[f32], dp: &mut [f32], len: usize, mut d: impl FnMut(usize, f32)) {
    for (i, (pr, dr)) in p.chunks(len).zip(dp.chunks_mut(len)).enumerate() {
        let dsum: f32 = pr.iter().zip(dr.iter()).map(|(&a, &b)| a * b).sum();
        d(i, dsum);
        dr.iter_mut().zip(pr).for_each(|(g, &a)| *g = a * (*g - dsum));
    }
}

/// Pooling's backward: mean spreads each sequence's gradient over its real tokens, first-token puts it on token 0.
pub fn pool_backward(
    d_pooled: &[f32],
    lens: &[u32],
    (seq, cols): (usize, usize),
    mode: PoolMode,
    d_hidden: &mut [f32],
) {
    let cols = cols.max(1);
    d_hidden.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        let (b, t) = (r / seq.max(1), r % seq.max(1));
        let len = lens[b] as usize;
        let d = &d_pooled[b * cols..(b + 1) * cols];
        match mode {
            PoolMode::Mean if t < len => row.iter_mut().zip(d).for_each(|(v, &g)| *v = g / len as f32),
            PoolMode::Cls if t == 0 => row.copy_from_slice(d),
            _ => row.fill(0.0),
        }
    });
}

/// l2 normalisation's backward from its input: `dx = (dy − y·(y·dy)) / n`, `n = max(‖x‖, 1e-12)`.
pub fn l2_normalize_backward(x: &[f32], dy: &[f32], cols: usize, dx: &mut [f32]) {
    let cols = cols.max(1);
    dx.par_chunks_mut(cols).enumerate().for_each(|(r, o)| {
        let (x, d) = (&x[r * cols..(r + 1) * cols], &dy[r * cols..(r + 1) * cols]);
        let n = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt().max(1e-12);
        let dot = x.iter().zip(d).map(|(&x, &d)| f64::from(x) / n * f64::from(d)).sum::<f64>();
        for ((o, &x), &d) in o.iter_mut().zip(x).zip(d) {
            *o = ((f64::from(d) - f64::from(x) / n * dot) / n) as f32;
        }
    });
}

/// `x[i] *= alpha`.
pub fn scale(x: &mut [f32], alpha: f32) {
    x.iter_mut().for_each(|v| *v *= alpha);
}

/// Σ x², in f64.
pub fn sum_squares(x: &[f32]) -> f64 {
    // Chunks of 4,096 values, each summed in eight lanes (independent additions, so the adds pipeline instead of
    // waiting on one another), the lanes and then the chunks added in order: the same sum on every run.
    let chunk = |c: &[f32]| -> f64 {
        let mut lanes = [0f64; 8];
        let mut rows = c.chunks_exact(8);
        for row in &mut rows {
            for (acc, &v) in lanes.iter_mut().zip(row) {
                *acc += f64::from(v) * f64::from(v);
            }
        }
        let tail: f64 = rows.remainder().iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        lanes.iter().sum::<f64>() + tail
    };
    if x.len() < 1 << 16 {
        return x.chunks(4096).map(chunk).sum();
    }
    let sums: Vec<f64> = x.par_chunks(4096).map(chunk).collect();
    sums.iter().sum()
}

/// One AdamW step over a flat parameter (see [`AdamWStep`]).
pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamWStep) {
    let (step_size, bc2_sqrt) = s.corrections();
    let decay = 1.0 - s.lr * s.weight_decay;
    param
        .par_chunks_mut(8192)
        .zip(grad.par_chunks(8192))
        .zip(m.par_chunks_mut(8192))
        .zip(v.par_chunks_mut(8192))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len().min(g.len()).min(m.len()).min(v.len()) {
                let gi = g[i] * s.grad_scale;
                p[i] *= decay;
                m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
                v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + s.eps;
                p[i] -= step_size * (m[i] / denom);
            }
        });
}
