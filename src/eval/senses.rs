//! Sense evaluation of word vectors in context (issue 14): given the vectors of one word form's occurrences at one
//! hidden state and the sense of each occurrence, how well do the vectors separate the senses?
//!
//! * mean cosine within a sense and across senses, each minus the mean cosine of random word pairs of the same
//!   hidden state (Ethayarajh 2019's anisotropy correction: contextual spaces are far from isotropic, so raw
//!   cosines are all high);
//! * AUC of same-sense against different-sense pairs by cosine (Mann–Whitney, ties count one half): 0.5 when the
//!   cosine says nothing, which is exactly what identical vectors (the static control) give;
//! * leave-one-out 1-NN sense accuracy (ties to the earlier occurrence) against the majority-sense rate.
//!
//! Sums run in f64, in a fixed order.

use crate::linalg::rng::SplitMix;

/// The scores of one word at one hidden state.
#[derive(Debug, Clone, PartialEq)]
pub struct SenseScores {
    pub occurrences: usize,
    pub senses: usize,
    /// Mean cosine of same-sense pairs minus the random-pair baseline; None without such a pair.
    pub within: Option<f64>,
    /// Mean cosine of different-sense pairs minus the baseline; None with one sense.
    pub across: Option<f64>,
    /// P(cos(same-sense pair) > cos(different-sense pair)) + ½ P(equal); None without both kinds of pairs.
    pub auc: Option<f64>,
    /// Leave-one-out 1-NN accuracy; None with fewer than two occurrences.
    pub knn_accuracy: Option<f64>,
    /// The share of the most frequent sense.
    pub majority_rate: f64,
}

/// Cosine of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa.sqrt() * bb.sqrt())
    }
}

/// Mann–Whitney AUC of `pos` over `neg`: ties count one half. None when either is empty.
pub fn auc(pos: &[f64], neg: &[f64]) -> Option<f64> {
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    // Rank-based, O((p + n) log(p + n)): sort everything, average ranks over ties.
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&v| (v, true)).chain(neg.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

/// The mean cosine of `pairs` random pairs of distinct vectors (seeded), or of every pair when there are fewer.
pub fn random_pair_baseline(vectors: &[&[f32]], pairs: usize, seed: u64) -> f64 {
    let n = vectors.len();
    if n < 2 {
        return 0.0;
    }
    let all = n * (n - 1) / 2;
    let mut sum = 0f64;
    if all <= pairs {
        for i in 0..n {
            for j in i + 1..n {
                sum += cosine(vectors[i], vectors[j]);
            }
        }
        return sum / all as f64;
    }
    let mut rng = SplitMix::new(seed);
    for _ in 0..pairs {
        let i = rng.below(n);
        let mut j = rng.below(n - 1);
        if j >= i {
            j += 1;
        }
        sum += cosine(vectors[i], vectors[j]);
    }
    sum / pairs as f64
}

/// Scores one word's occurrences (`vectors[i]` has sense `senses[i]`) against the random-pair `baseline`.
pub fn evaluate(vectors: &[&[f32]], senses: &[&str], baseline: f64) -> SenseScores {
    let n = vectors.len().min(senses.len());
    let mut cos = vec![0f64; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let c = cosine(vectors[i], vectors[j]);
            cos[i * n + j] = c;
            cos[j * n + i] = c;
        }
    }
    let (mut same, mut diff) = (Vec::new(), Vec::new());
    for i in 0..n {
        for j in i + 1..n {
            if senses[i] == senses[j] { &mut same } else { &mut diff }.push(cos[i * n + j]);
        }
    }
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64 - baseline);
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for s in &senses[..n] {
        *counts.entry(s).or_default() += 1;
    }
    let majority = counts.values().copied().max().unwrap_or(0);
    let knn_accuracy = (n >= 2).then(|| {
        let correct = (0..n)
            .filter(|&i| {
                // The nearest other occurrence; ties to the earlier one.
                let nearest = (0..n).filter(|&j| j != i).fold(None::<usize>, |best, j| match best {
                    Some(b) if cos[i * n + b] >= cos[i * n + j] => Some(b),
                    _ => Some(j),
                });
                nearest.is_some_and(|j| senses[j] == senses[i])
            })
            .count();
        correct as f64 / n as f64
    });
    SenseScores {
        occurrences: n,
        senses: counts.len(),
        within: mean(&same),
        across: mean(&diff),
        auc: auc(&same, &diff),
        knn_accuracy,
        majority_rate: if n == 0 { 0.0 } else { majority as f64 / n as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_one_half() {
        // Pairs (pos, neg): (3,1) win, (3,3) tie, (2,1) win, (2,3) loss → (2 + 0.5) / 4.
        assert_eq!(auc(&[3.0, 2.0], &[1.0, 3.0]), Some(0.625));
        assert_eq!(auc(&[1.0, 1.0], &[1.0]), Some(0.5));
        assert_eq!(auc(&[2.0], &[1.0]), Some(1.0));
        assert_eq!(auc(&[0.0], &[1.0, 2.0]), Some(0.0));
        assert_eq!(auc(&[], &[1.0]), None);
    }

    #[test]
    fn identical_vectors_the_static_control_give_exactly_one_half() {
        let v = [0.3f32, -1.0, 2.0];
        let vectors = vec![&v[..]; 6];
        let senses = ["fruit", "colour", "fruit", "colour", "fruit", "colour"];
        let s = evaluate(&vectors, &senses, 0.25);
        assert_eq!(s.auc, Some(0.5));
        assert_eq!(s.within, s.across);
        assert!((s.within.expect("pairs") - 0.75).abs() < 1e-12, "cos 1 minus the baseline");
        // Every other occurrence ties at cosine 1: the earliest wins, so occurrence 0 (fruit) is everyone's
        // neighbour but its own (occurrence 1, colour, is 0's): fruit ones right except 0, colour ones wrong.
        assert_eq!(s.knn_accuracy, Some(2.0 / 6.0));
        assert_eq!(s.majority_rate, 0.5);
    }

    #[test]
    fn separated_senses_score_one_and_a_single_sense_has_no_across() {
        let (a1, a2, b1, b2) = ([1.0f32, 0.1], [1.0f32, 0.0], [0.0f32, 1.0], [0.1f32, 1.0]);
        let s = evaluate(&[&a1, &a2, &b1, &b2], &["a", "a", "b", "b"], 0.0);
        assert_eq!(s.auc, Some(1.0));
        assert_eq!(s.knn_accuracy, Some(1.0));
        assert!(s.within.expect("w") > s.across.expect("a"));
        let one = evaluate(&[&a1, &a2], &["a", "a"], 0.0);
        assert_eq!((one.senses, one.across, one.auc), (1, None, None));
        assert_eq!(one.majority_rate, 1.0);
    }

    #[test]
    fn the_baseline_uses_every_pair_when_few_and_a_seeded_sample_otherwise() {
        let (x, y, z) = ([1.0f32, 0.0], [0.0f32, 1.0], [1.0f32, 1.0]);
        let all = random_pair_baseline(&[&x, &y, &z], 10, 1);
        let want = (0.0 + 2f64.sqrt() / 2.0 + 2f64.sqrt() / 2.0) / 3.0;
        assert!((all - want).abs() < 1e-12);
        let many: Vec<[f32; 2]> = (0..50).map(|i| [i as f32, 1.0]).collect();
        let refs: Vec<&[f32]> = many.iter().map(|v| &v[..]).collect();
        assert_eq!(random_pair_baseline(&refs, 100, 7), random_pair_baseline(&refs, 100, 7));
        assert!(random_pair_baseline(&refs, 100, 7) > 0.0);
    }
}
