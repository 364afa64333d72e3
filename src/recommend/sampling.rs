//! Negatives for the sampled softmax (the standard for large catalogues since the YouTube recommendations paper):
//! each training batch draws `negatives` items with replacement from a proposal Q (item frequency among the training
//! users, or uniform), shared by every row of the batch. A row's candidates are its own target and the distinct
//! drawn items; every candidate's logit is corrected by −log P(c ∈ drawn) = −log(1 − (1 − Q(c))^negatives), so that
//! the sampled loss estimates the full softmax's (the log-Q correction; Jean et al. 2015, Bengio & Senécal 2008).

use serde::{Deserialize, Serialize};

use crate::linalg::rng::SplitMix;

/// The loss of the embedding model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax over every item.
    #[default]
    Softmax,
    /// Softmax over the batch's shared sampled negatives and each row's target, log-Q corrected.
    SampledSoftmax,
}

/// The proposal the negatives are drawn from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// In proportion to each item's number of training users.
    #[default]
    Frequency,
    /// Every item alike.
    Uniform,
}

/// Draws items from a fixed distribution in O(1) each (Vose's alias method), seeded.
#[derive(Debug, Clone)]
pub struct AliasTable {
    /// Probability of each item (the proposal Q).
    pub q: Vec<f64>,
    accept: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// The table for weights proportional to `weights` (non-negative, not all zero; all zero means uniform).
    pub fn new(weights: &[f64]) -> AliasTable {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let q: Vec<f64> =
            if total > 0.0 { weights.iter().map(|w| w / total).collect() } else { vec![1.0 / n as f64; n] };
        let mut accept: Vec<f64> = q.iter().map(|p| p * n as f64).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| accept[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            accept[l] -= 1.0 - accept[s];
            if accept[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        // What rounding left on either list has probability 1.
        for i in small.into_iter().chain(large) {
            accept[i] = 1.0;
        }
        AliasTable { q, accept, alias }
    }

    /// One item.
    pub fn draw(&self, rng: &mut SplitMix) -> u32 {
        let i = rng.below(self.q.len());
        if rng.next_f64() < self.accept[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }

    /// The log of the probability that item `c` is among `draws` independent draws: log(1 − (1 − Q(c))^draws),
    /// computed without cancellation for small Q.
    pub fn log_inclusion(&self, c: u32, draws: usize) -> f64 {
        let q = self.q[c as usize];
        if q >= 1.0 {
            return 0.0;
        }
        (-(draws as f64 * (-q).ln_1p()).exp_m1()).ln()
    }
}

/// One batch's candidate columns: the distinct drawn negatives and the batch's targets, sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Distinct items, ascending.
    pub items: Vec<u32>,
    /// 1 where the item was drawn (a negative of every row), 0 where it is only some rows' target.
    pub shared: Vec<f32>,
    /// log P(item among the draws), per column (the log-Q correction).
    pub log_q: Vec<f32>,
    /// Each row's target column.
    pub target_columns: Vec<u32>,
}

impl Candidates {
    /// The candidates of a batch with `targets`, given its `draws`.
    pub fn new(table: &AliasTable, draws: &[u32], targets: &[u32]) -> Candidates {
        let mut drawn = draws.to_vec();
        drawn.sort_unstable();
        drawn.dedup();
        let mut items: Vec<u32> = drawn.iter().chain(targets).copied().collect();
        items.sort_unstable();
        items.dedup();
        let shared = items.iter().map(|i| if drawn.binary_search(i).is_ok() { 1.0 } else { 0.0 }).collect();
        let log_q = items.iter().map(|&i| table.log_inclusion(i, draws.len()) as f32).collect();
        let target_columns = targets.iter().map(|t| items.binary_search(t).map_or(0, |j| j as u32)).collect();
        Candidates { items, shared, log_q, target_columns }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_draws_follow_the_weights() {
        let w = [5.0, 1.0, 0.0, 2.0, 12.0];
        let t = AliasTable::new(&w);
        let mut rng = SplitMix::new(3);
        let mut counts = [0usize; 5];
        let n = 200_000;
        for _ in 0..n {
            counts[t.draw(&mut rng) as usize] += 1;
        }
        for (c, w) in counts.iter().zip(w) {
            let want = w / 20.0;
            assert!((*c as f64 / n as f64 - want).abs() < 0.005, "{counts:?}");
        }
        assert_eq!(counts[2], 0);
    }

    #[test]
    fn inclusion_probability_and_candidates() {
        let t = AliasTable::new(&[1.0, 1.0, 2.0]);
        // 1 − (1 − 1/4)^2 = 7/16.
        assert!((t.log_inclusion(0, 2) - (7.0f64 / 16.0).ln()).abs() < 1e-12);
        let tiny = AliasTable::new(&[1e-12, 1.0]);
        assert!((tiny.log_inclusion(0, 3) - (3e-12f64).ln()).abs() < 1e-6);
        let c = Candidates::new(&t, &[2, 0, 2], &[1, 2]);
        assert_eq!(c.items, vec![0, 1, 2]);
        assert_eq!(c.shared, vec![1.0, 0.0, 1.0]);
        assert_eq!(c.target_columns, vec![1, 2]);
    }
}
