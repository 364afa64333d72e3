//! Evaluation as the peer harness defines it: ranks over all items with the user's other favourites masked,
//! recall@k (hit rate), MRR over the full ranking, NDCG@k; a popularity baseline; cosine nearest neighbours and,
//! with labels, how often neighbours share a category.

use std::collections::HashMap;

/// Ranking quality of one model under one protocol.
#[derive(Debug, Clone, PartialEq)]
pub struct RankingMetrics {
    pub examples: usize,
    /// (k, recall@k) for each cut-off.
    pub recall: Vec<(usize, f64)>,
    /// (k, NDCG@k).
    pub ndcg: Vec<(usize, f64)>,
    pub mrr: f64,
}

/// Metrics from 1-based ranks.
pub fn ranking_metrics(ranks: &[f64], ks: &[usize]) -> RankingMetrics {
    let n = ranks.len().max(1) as f64;
    let recall = ks.iter().map(|&k| (k, ranks.iter().filter(|&&r| r <= k as f64).count() as f64 / n)).collect();
    let ndcg = ks
        .iter()
        .map(|&k| (k, ranks.iter().filter(|&&r| r <= k as f64).map(|&r| 1.0 / (r + 1.0).log2()).sum::<f64>() / n))
        .collect();
    let mrr = ranks.iter().map(|&r| 1.0 / r).sum::<f64>() / n;
    RankingMetrics { examples: ranks.len(), recall, ndcg, mrr }
}

/// Popularity ranks: score = number of train users with the item; ties go to the smaller item index.
/// `masks[r]` are excluded from row r's candidates (the target never is).
pub fn popularity_ranks(popularity: &[u64], targets: &[u32], masks: &[&[u32]]) -> Vec<f64> {
    // Position of each item in the global popularity order.
    let mut order: Vec<u32> = (0..popularity.len() as u32).collect();
    order.sort_by(|&a, &b| popularity[b as usize].cmp(&popularity[a as usize]).then(a.cmp(&b)));
    let mut pos = vec![0usize; popularity.len()];
    for (p, &i) in order.iter().enumerate() {
        pos[i as usize] = p;
    }
    targets
        .iter()
        .zip(masks)
        .map(|(&t, mask)| {
            let before = pos[t as usize];
            let masked_before = mask.iter().filter(|&&m| m != t && pos[m as usize] < before).count();
            (before - masked_before + 1) as f64
        })
        .collect()
}

/// With item labels: the mean over labelled items of the share of their (labelled) neighbours with the same label,
/// and the share expected by chance (Σ_c p_c² over the labelled items).
pub fn label_agreement(neighbors: &[u32], k: usize, labels: &[Option<String>]) -> Option<(f64, f64)> {
    let mut total = 0.0;
    let mut counted = 0usize;
    for (i, label) in labels.iter().enumerate() {
        let Some(label) = label else { continue };
        let nb = &neighbors[i * k..(i + 1) * k];
        let labelled: Vec<&String> = nb.iter().filter_map(|&j| labels[j as usize].as_ref()).collect();
        if labelled.is_empty() {
            continue;
        }
        total += labelled.iter().filter(|l| **l == label).count() as f64 / labelled.len() as f64;
        counted += 1;
    }
    if counted == 0 {
        return None;
    }
    let mut freq: HashMap<&String, usize> = HashMap::new();
    let mut n = 0usize;
    for l in labels.iter().flatten() {
        *freq.entry(l).or_default() += 1;
        n += 1;
    }
    let chance = freq.values().map(|&c| (c as f64 / n as f64).powi(2)).sum();
    Some((total / counted as f64, chance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_known_ranks() {
        let m = ranking_metrics(&[1.0, 3.0, 20.0], &[10]);
        assert_eq!(m.recall, vec![(10, 2.0 / 3.0)]);
        assert!((m.mrr - (1.0 + 1.0 / 3.0 + 1.0 / 20.0) / 3.0).abs() < 1e-12);
        assert!((m.ndcg[0].1 - (1.0 + 1.0 / 4f64.log2()) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn popularity_ties_go_to_the_smaller_index_and_masks_lift_the_target() {
        let pop = [5, 9, 5, 1];
        // Order: 1 (9), 0 (5), 2 (5), 3 (1).
        assert_eq!(popularity_ranks(&pop, &[2], &[&[]]), vec![3.0]);
        assert_eq!(popularity_ranks(&pop, &[2], &[&[1, 2]]), vec![2.0]);
        assert_eq!(popularity_ranks(&pop, &[3], &[&[0, 1]]), vec![2.0]);
    }
}
