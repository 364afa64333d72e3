//! Dropout masks that both backends draw alike: a value's fate is a hash of its index and the site's key (no
//! random state), so the CPU twin and the WGSL kernels (shaders/dropout.wgsl) drop the same values, the backward
//! pass regenerates the forward pass's mask instead of storing it, and the same seed gives the same masks.
//!
//! `keeps(i) = mix(mix(i) ^ key) ≥ threshold`, with `mix` the lowbias32 integer hash (bijective on u32) and
//! `threshold = round(p·2³²)`; kept values are scaled by `1 / (1 − p)`, as `torch.nn.Dropout` in training.

/// One site's mask in one step: which values it drops (`threshold`) and how it scales the rest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub key: u32,
    pub threshold: u32,
    pub scale: f32,
}

impl Dropout {
    /// The mask of probability `p` for `(seed, step, site)`; `None` when `p` is 0 (nothing dropped).
    pub fn new(p: f32, seed: u64, step: u64, site: u32) -> Option<Dropout> {
        if p <= 0.0 || !p.is_finite() {
            return None;
        }
        let p = p.min(0.999_999);
        let threshold = (f64::from(p) * 4_294_967_296.0).round().min(f64::from(u32::MAX)) as u32;
        let mut z =
            seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(site).wrapping_mul(0xD1B5_4A32_D192_ED03);
        // splitmix64's finaliser: every input bit moves the key.
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Some(Dropout { key: z as u32, threshold, scale: (1.0 / (1.0 - f64::from(p))) as f32 })
    }

    /// Whether the value at `index` is kept.
    pub fn keeps(&self, index: u32) -> bool {
        mix(mix(index) ^ self.key) >= self.threshold
    }

    /// The factor of the value at `index`: `scale` or 0.
    pub fn factor(&self, index: u32) -> f32 {
        if self.keeps(index) {
            self.scale
        } else {
            0.0
        }
    }

    /// The WGSL parameters (key, threshold, scale) of an optional mask: threshold 0 keeps every value.
    pub fn params(d: Option<Dropout>) -> (u32, u32, f32) {
        d.map_or((0, 0, 1.0), |d| (d.key, d.threshold, d.scale))
    }
}

/// lowbias32 (Chris Wellons' integer hash search): a bijection of u32 with low bias.
pub fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// In place: each of `x`'s values times its factor (the first value is index `first`).
pub fn apply(x: &mut [f32], first: u32, d: &Dropout) {
    for (i, v) in x.iter_mut().enumerate() {
        *v *= d.factor(first.wrapping_add(i as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_keeps_one_minus_p_and_differs_by_step_and_site() {
        let d = Dropout::new(0.1, 7, 3, 2).expect("mask");
        let kept = (0..1_000_000u32).filter(|&i| d.keeps(i)).count() as f64 / 1e6;
        assert!((kept - 0.9).abs() < 0.002, "{kept}");
        assert!((d.scale - 1.0 / 0.9).abs() < 1e-7);
        let other = [Dropout::new(0.1, 7, 4, 2), Dropout::new(0.1, 7, 3, 1), Dropout::new(0.1, 8, 3, 2)];
        for o in other.into_iter().flatten() {
            let same = (0..100_000u32).filter(|&i| d.keeps(i) == o.keeps(i)).count() as f64 / 1e5;
            // Independent masks agree on 0.9² + 0.1² = 0.82 of the values.
            assert!((same - 0.82).abs() < 0.01, "{same}");
        }
        assert!(Dropout::new(0.0, 7, 3, 2).is_none());
    }
}
