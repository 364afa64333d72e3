//! The sampled softmax: strided gathers of candidates and its loss and gradient (the CPU twins of
//! shaders/sampled.wgsl).

use rayon::prelude::*;

use super::elementwise::column_sums;
use crate::backend::NO_ROW;

/// `dst[j][e] = src[idx[j]·stride.0 + e·stride.1]`, `width` values per index; an index [`NO_ROW`] gives zeros.
pub fn gather(src: &[f32], idx: &[u32], width: usize, stride: (usize, usize), dst: &mut [f32]) {
    let one = |(&i, out): (&u32, &mut [f32])| {
        if i == NO_ROW {
            out.fill(0.0);
            return;
        }
        let base = i as usize * stride.0;
        for (e, d) in out.iter_mut().enumerate() {
            *d = src[base + e * stride.1];
        }
    };
    if width == 0 {
        return;
    }
    let dst = &mut dst[..idx.len() * width];
    if idx.len() * width >= 1 << 16 {
        idx.par_iter().zip(dst.par_chunks_mut(width)).for_each(one);
    } else {
        idx.iter().zip(dst.chunks_mut(width)).for_each(one);
    }
}

/// The sampled softmax cross-entropy of [`crate::backend::Backend::sampled_softmax_xent`], row by row in f32 with
/// the sums of exponentials in f64 (fixed order); the column sums of the gradient added in row order.
#[allow(clippy::too_many_arguments)]
pub fn sampled_softmax_xent(
    logits: &mut [f32],
    rows: usize,
    count: usize,
    bias: &[f32],
    log_q: &[f32],
    shared: &[f32],
    targets: &[u32],
    losses: &mut [f32],
    bias_grad: &mut [f32],
) {
    let scale = 1.0 / rows as f32;
    logits[..rows * count]
        .par_chunks_mut(count.max(1))
        .zip(losses[..rows].par_iter_mut())
        .zip(&targets[..rows])
        .for_each(|((row, loss), &t)| {
            let t = t as usize;
            let active = |j: usize| shared[j] > 0.0 || j == t;
            let mut max = f32::NEG_INFINITY;
            for j in 0..count {
                let z = row[j] + bias[j] - log_q[j];
                row[j] = z;
                if active(j) && z > max {
                    max = z;
                }
            }
            let mut sum = 0.0f64;
            for (j, &z) in row.iter().enumerate() {
                if active(j) {
                    sum += f64::from((z - max).exp());
                }
            }
            let log_sum = sum.ln() as f32;
            *loss = max + log_sum - row[t];
            for (j, z) in row.iter_mut().enumerate() {
                *z = if active(j) {
                    let p = (*z - max - log_sum).exp();
                    (p - if j == t { 1.0 } else { 0.0 }) * scale
                } else {
                    0.0
                };
            }
        });
    column_sums(logits, rows, count, bias_grad);
}
