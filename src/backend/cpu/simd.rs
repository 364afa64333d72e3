//! Vector code for every CPU kernel: one source compiled for AVX-512, AVX2 + FMA and the baseline, picked at run
//! time ([`multiversion`]), and the fast exponential of the softmaxes.

/// `e^x` for `x ≤ 0` (softmax arguments), within 2 ulp of `f32::exp` down to −87 and branch-free so that the
/// compiler vectorizes it: `e^x = 2^n · e^r` with `r = x − n·ln 2`, `|r| ≤ ln 2 / 2`, and a degree-6 polynomial for
/// `e^r`. Below −87.3 it returns about 1e-38 instead of 0 (the smallest normal float's neighbourhood).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
                                     // A comparison, not f32::max, and the exponent from the rounding sum's bits, not a float-to-int cast: both
                                     // keep a loop of this function vectorized. NaN stays NaN.
    let x = if x < -87.3 { -87.3 } else { x };
    let rounded = x * LOG2E + ROUND; // 1.5 · 2^23 + n: n sits in the low bits of the mantissa
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let biased = rounded.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    f32::from_bits(biased << 23) * p
}

/// Defines `$name`, which runs `$generic` compiled for AVX-512 or AVX2 + FMA when the CPU has them, else for the
/// baseline target. The source is the same and floating-point contraction stays off, so all give identical results.
macro_rules! multiversion {
    ($vis:vis fn $name:ident / $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports these features, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}
pub(super) use multiversion;

/// `y += a·x` in f64 (the sparse products of PCA).
pub fn axpy_f64(y: &mut [f64], a: f64, x: &[f64]) {
    axpy_f64_dispatch(y, a, x)
}

multiversion!(fn axpy_f64_dispatch / axpy_f64_generic(y: &mut [f64], a: f64, x: &[f64]));

#[inline(always)]
pub(super) fn axpy_f64_generic(y: &mut [f64], a: f64, x: &[f64]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

multiversion!(pub(super) fn axpy_f32 / axpy_f32_generic(y: &mut [f32], x: &[f32]));

#[inline(always)]
pub(super) fn axpy_f32_generic(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += v;
    }
}

multiversion!(pub(super) fn exp_shifted_dispatch / exp_shifted(row: &mut [f32]) -> (f32, f32));

/// Replaces each value x of `row` with e^(x − max) and returns (max, Σ e^(x − max)). The maximum and the sum run over
/// 16 fixed lanes (the remainder's sum first, then the lanes in order), so they vectorize and the result does not
/// depend on the CPU's vector width. Shared by both softmaxes.
#[inline(always)]
pub(super) fn exp_shifted(row: &mut [f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            lane_max[l] = if c[l] > lane_max[l] { c[l] } else { lane_max[l] };
        }
    }
    let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    max = lane_max.iter().fold(max, |m, &v| if v > m { v } else { m });
    let mut lane_sum = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp_nonpositive(c[l] - max);
            c[l] = e;
            lane_sum[l] += e;
        }
    }
    let mut sum = 0.0f32;
    for v in chunks.into_remainder() {
        let e = exp_nonpositive(*v - max);
        *v = e;
        sum += e;
    }
    sum += lane_sum.iter().sum::<f32>();
    (max, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std_exp() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!((a - b).abs() <= 3e-7 * b, "exp({x}): {a} vs {b}");
            x -= 0.0137;
        }
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }
}
