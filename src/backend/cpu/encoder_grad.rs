//! The encoder's backward pass and AdamW: the CPU twins of shaders/encoder_grad.wgsl, encoder.wgsl's `embed_sum`
//! and optim.wgsl's `adamw`. Sums over a row run in f64; each value's order of operations follows its kernel's.

use rayon::prelude::*;

use super::elementwise::{activate, erf_approx};
use crate::backend::{Activation, AdamWStep, PoolMode};

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

/// The shape of a batch's attention for its backward pass.
#[derive(Debug, Clone, Copy)]
pub struct AttnDims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Attention's backward, as shaders/encoder_grad.wgsl computes it: per (sequence, head), first each query i
/// (log-sum-exp of its scores over the real keys, D = Σ_j P·dP, dq = scale·Σ_j P·(dP − D)·k_j), then each real
/// key j (dk = scale·Σ_i P·(dP − D)·q_i, dv = Σ_i P·dO_i, over every query row); padding keys get zero gradients.
pub fn attention_backward(qkv: &[f32], lens: &[u32], s: AttnDims, d_out: &[f32], d_qkv: &mut [f32], stats: &mut [f32]) {
    let (hd, h_all) = (s.head_dim, s.heads * s.head_dim);
    let width = 3 * h_all;
    // One sequence per task: its rows of d_qkv and stats are its own.
    let rows_per = s.seq * width;
    d_qkv[..s.batch * rows_per]
        .par_chunks_mut(rows_per.max(1))
        .zip(stats[..s.batch * s.seq * s.heads * 2].par_chunks_mut((s.seq * s.heads * 2).max(1)))
        .enumerate()
        .for_each(|(b, (dq_b, st_b))| {
            let len = (lens[b] as usize).min(s.seq);
            let at = |t: usize, part: usize, h: usize| (b * s.seq + t) * width + part * h_all + h * hd;
            let dot = |x: usize, xs: &[f32], y: usize, ys: &[f32]| {
                let mut acc = 0f32;
                for d in 0..hd {
                    acc += xs[x + d] * ys[y + d];
                }
                acc
            };
            dq_b.iter_mut().for_each(|v| *v = 0.0);
            for h in 0..s.heads {
                let o_at = |t: usize| (b * s.seq + t) * h_all + h * hd;
                // The queries' pass.
                for i in 0..s.seq {
                    let (mut m, mut l) = (-3.0e38f32, 0f32);
                    for j in 0..len {
                        let sc = s.scale * dot(at(i, 0, h), qkv, at(j, 1, h), qkv);
                        let m_new = m.max(sc);
                        l = l * (m - m_new).exp() + (sc - m_new).exp();
                        m = m_new;
                    }
                    let lse = if len == 0 { 0.0 } else { m + l.ln() };
                    let mut dsum = 0f32;
                    for j in 0..len {
                        let p = (s.scale * dot(at(i, 0, h), qkv, at(j, 1, h), qkv) - lse).exp();
                        dsum += p * dot(o_at(i), d_out, at(j, 2, h), qkv);
                    }
                    let si = (i * s.heads + h) * 2;
                    st_b[si] = lse;
                    st_b[si + 1] = dsum;
                    let local = i * width + h * hd;
                    for j in 0..len {
                        let p = (s.scale * dot(at(i, 0, h), qkv, at(j, 1, h), qkv) - lse).exp();
                        let ds = p * (dot(o_at(i), d_out, at(j, 2, h), qkv) - dsum) * s.scale;
                        for d in 0..hd {
                            dq_b[local + d] += ds * qkv[at(j, 1, h) + d];
                        }
                    }
                }
                // The keys' pass.
                for j in 0..len {
                    let (dk_at, dv_at) = (j * width + h_all + h * hd, j * width + 2 * h_all + h * hd);
                    for i in 0..s.seq {
                        let si = (i * s.heads + h) * 2;
                        let (lse, dsum) = (st_b[si], st_b[si + 1]);
                        let p = (s.scale * dot(at(i, 0, h), qkv, at(j, 1, h), qkv) - lse).exp();
                        let dp = dot(o_at(i), d_out, at(j, 2, h), qkv);
                        let ds = p * (dp - dsum) * s.scale;
                        for d in 0..hd {
                            dq_b[dk_at + d] += ds * qkv[at(i, 0, h) + d];
                            dq_b[dv_at + d] += p * d_out[o_at(i) + d];
                        }
                    }
                }
            }
        });
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
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
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
