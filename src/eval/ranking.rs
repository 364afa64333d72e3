//! Evaluation as the peer harness defines it: ranks over all items with the user's other favourites masked,
//! recall@k (hit rate), MRR over the full ranking, NDCG@k; a popularity baseline; cosine nearest neighbours and,
//! with labels, how often neighbours share a category.

use std::collections::BTreeMap;

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
    // A BTreeMap, so the f64 sum below runs in label order: a HashMap's order changes from process to process.
    let mut freq: BTreeMap<&String, usize> = BTreeMap::new();
    let mut n = 0usize;
    for l in labels.iter().flatten() {
        *freq.entry(l).or_default() += 1;
        n += 1;
    }
    let chance = freq.values().map(|&c| (c as f64 / n as f64).powi(2)).sum();
    Some((total / counted as f64, chance))
}

/// Ranks (1-based) with ties sharing their mean rank.
fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation (Pearson correlation of average ranks); `None` below 2 pairs or without variance.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    if a.len() < 2 || a.len() != b.len() {
        return None;
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_known_series() {
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), Some(1.0));
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), Some(-1.0));
        // scipy.stats.spearmanr([1, 2, 2, 4], [1, 3, 2, 4]) = 0.9486832980505138
        let r = spearman(&[1.0, 2.0, 2.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).expect("rho");
        assert!((r - 0.9486832980505138).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

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
