//! Bias and activation, ReLU's backward, column sums: the CPU twins of shaders/elementwise.wgsl (and of the
//! activation fragment the GEMM epilogue shares).

use rayon::prelude::*;

use super::simd::*;
use crate::backend::Activation;

/// `x = act(x + bias)` row by row.
pub fn bias_act(x: &mut [f32], bias: &[f32], cols: usize, act: Activation) {
    x.par_chunks_mut(cols.max(1)).for_each(|row| bias_act_row(row, bias, act));
}

/// `grad *= (act > 0)`.
pub fn relu_backward(grad: &mut [f32], act: &[f32]) {
    for (g, &a) in grad.iter_mut().zip(act) {
        if a <= 0.0 {
            *g = 0.0;
        }
    }
}

/// Column sums, rows in order.
pub fn column_sums(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for r in 0..rows {
        for (o, &v) in out.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o += v;
        }
    }
}

multiversion!(fn bias_act_row / bias_act_row_generic(row: &mut [f32], bias: &[f32], act: Activation));

/// One row of `bias_act`, a loop per activation so that each vectorizes (the erf's exponential is
/// `exp_nonpositive`, plain arithmetic).
#[inline(always)]
fn bias_act_row_generic(row: &mut [f32], bias: &[f32], act: Activation) {
    let n = row.len().min(bias.len());
    let (row, bias) = (&mut row[..n], &bias[..n]);
    match act {
        Activation::Identity => row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b),
        Activation::Relu => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::Relu)),
        Activation::Gelu => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::Gelu)),
        Activation::GeluTanh => {
            row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::GeluTanh))
        }
    }
}

// ---- The Transformer encoder's kernels (BERT family): the references of shaders/encoder.wgsl. ----

/// An activation (the `act` code of shaders/elementwise.wgsl).
#[inline(always)]
pub fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => v,
        Activation::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        // BERT's "gelu": x·Φ(x), with the erf of shaders/elementwise.wgsl (Abramowitz & Stegun 7.1.26,
        // |error| < 1.5e-7; libm's f64 erf took a fifth of the encoder's CPU time).
        Activation::Gelu => 0.5 * v * (1.0 + erf_approx(v * std::f32::consts::FRAC_1_SQRT_2)),
        // "gelu_new": the tanh approximation.
        Activation::GeluTanh => {
            let x = f64::from(v);
            (0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())) as f32
        }
    }
}

/// erf(z) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as shaders/elementwise.wgsl computes it.
/// The exponential is `exp_nonpositive` (−z² ≤ 0), so a loop of it vectorizes.
#[inline(always)]
pub fn erf_approx(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp_nonpositive(-a * a)).copysign(z)
}
