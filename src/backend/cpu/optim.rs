//! Adam, lazy Adam on selected slices and SGD: the CPU twins of shaders/optim.wgsl.

use rayon::prelude::*;

use super::simd::*;
use crate::backend::AdamStep;

/// One Adam step over a flat parameter.
pub fn adam(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    param
        .par_chunks_mut(8192)
        .zip(grad.par_chunks(8192))
        .zip(m.par_chunks_mut(8192))
        .zip(v.par_chunks_mut(8192))
        .for_each(|(((p, g), m), v)| adam_chunk(p, g, m, v, s));
}

multiversion!(fn adam_chunk / adam_chunk_generic(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep));

#[inline(always)]
fn adam_chunk_generic(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    let bc1 = 1.0 - s.beta1.powi(s.t as i32);
    let bc2 = 1.0 - s.beta2.powi(s.t as i32);
    let step = s.lr / bc1;
    let inv_bc2_sqrt = 1.0 / bc2.sqrt();
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i] + s.weight_decay * p[i];
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
        let denom = v[i].sqrt() * inv_bc2_sqrt + s.eps;
        p[i] -= step * m[i] / denom;
    }
}

/// Lazy Adam over the selected slices of a parameter (see [`crate::backend::Selected`]).
#[allow(clippy::too_many_arguments)]
pub fn adam_selected(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    idx: &[u32],
    width: usize,
    param_stride: (usize, usize),
    grad_stride: (usize, usize),
    grad_by_index: bool,
    s: AdamStep,
) {
    let bc1 = 1.0 - s.beta1.powi(s.t as i32);
    let bc2 = 1.0 - s.beta2.powi(s.t as i32);
    let step = s.lr / bc1;
    let inv_bc2_sqrt = 1.0 / bc2.sqrt();
    for (j, &i) in idx.iter().enumerate() {
        let g0 = if grad_by_index { i as usize } else { j };
        for e in 0..width {
            let p = i as usize * param_stride.0 + e * param_stride.1;
            let gi = grad[g0 * grad_stride.0 + e * grad_stride.1] + s.weight_decay * param[p];
            m[p] = s.beta1 * m[p] + (1.0 - s.beta1) * gi;
            v[p] = s.beta2 * v[p] + (1.0 - s.beta2) * gi * gi;
            let denom = v[p].sqrt() * inv_bc2_sqrt + s.eps;
            param[p] -= step * m[p] / denom;
        }
    }
}

/// One SGD step with momentum.
pub fn sgd(param: &mut [f32], grad: &[f32], velocity: &mut [f32], lr: f32, momentum: f32, weight_decay: f32) {
    for i in 0..param.len() {
        let g = grad[i] + weight_decay * param[i];
        velocity[i] = momentum * velocity[i] + g;
        param[i] -= lr * velocity[i];
    }
}
