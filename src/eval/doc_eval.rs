//! Document-level evaluation as pure functions: cosine nearest neighbours of sparse rows (bag-of-words), and how
//! well a document's neighbours predict its category (label agreement and leave-one-out kNN accuracy) against
//! what chance and the majority class give.

use rayon::prelude::*;

use crate::linalg::sparse::Csr;

/// The `k` nearest rows of `x` by cosine similarity, itself excluded; ties go to the smaller index, rows with no
/// entries have cosine 0 with every row. Returns (neighbour indices, cosines), n×k' each with k' = min(k, n − 1).
/// Scores accumulate in f64 over the shared columns (an inverted index), so two rows' cosine does not depend on
/// the other rows.
pub fn sparse_cosine_top_k(x: &Csr, k: usize) -> (Vec<u32>, Vec<f32>) {
    let n = x.rows;
    let k = k.min(n.saturating_sub(1));
    let norms: Vec<f64> =
        (0..n).map(|r| x.values[x.indptr[r]..x.indptr[r + 1]].iter().map(|v| v * v).sum::<f64>().sqrt()).collect();
    // Column postings (row, value / norm), rows ascending.
    let mut starts = vec![0usize; x.cols + 1];
    for &c in &x.indices {
        starts[c as usize + 1] += 1;
    }
    for c in 0..x.cols {
        starts[c + 1] += starts[c];
    }
    let mut fill = starts.clone();
    let mut postings = vec![(0u32, 0f64); x.indices.len()];
    for (r, &norm) in norms.iter().enumerate() {
        for e in x.indptr[r]..x.indptr[r + 1] {
            let c = x.indices[e] as usize;
            let v = if norm > 0.0 { x.values[e] / norm } else { 0.0 };
            postings[fill[c]] = (r as u32, v);
            fill[c] += 1;
        }
    }
    let mut idx = vec![0u32; n * k];
    let mut sim = vec![0f32; n * k];
    if k == 0 {
        return (idx, sim);
    }
    idx.par_chunks_mut(k).zip(sim.par_chunks_mut(k)).enumerate().for_each_init(
        || (vec![0f64; n], vec![u32::MAX; n]),
        |(scores, seen), (r, (oi, os))| {
            // The rows sharing a column with row r, each once (`seen` holds the row that last touched it).
            let mut touched: Vec<usize> = Vec::new();
            if norms[r] > 0.0 {
                for e in x.indptr[r]..x.indptr[r + 1] {
                    let c = x.indices[e] as usize;
                    let q = x.values[e] / norms[r];
                    for &(j, v) in &postings[starts[c]..starts[c + 1]] {
                        let j = j as usize;
                        if seen[j] != r as u32 {
                            seen[j] = r as u32;
                            touched.push(j);
                        }
                        scores[j] += q * v;
                    }
                }
            }
            // Every other row scores exactly 0: when k touched rows score above 0 they are the answer, else the
            // zeros (smallest indices first) take part and every row is looked at.
            let mut best = top_k_of(scores, touched.iter().copied(), r, k);
            if best.len() < k || best[k - 1].0 <= 0.0 {
                best = top_k_of(scores, 0..n, r, k);
            }
            for (i, (v, j)) in best.into_iter().enumerate() {
                oi[i] = j;
                os[i] = v as f32;
            }
            for j in touched {
                scores[j] = 0.0;
            }
        },
    );
    (idx, sim)
}

/// The k largest of `scores[j]` for the `candidates` j other than `me` (in any order), descending, ties to the
/// smaller index.
fn top_k_of(scores: &[f64], candidates: impl Iterator<Item = usize>, me: usize, k: usize) -> Vec<(f64, u32)> {
    let mut best: Vec<(f64, u32)> = Vec::with_capacity(k + 1);
    for j in candidates {
        let v = scores[j];
        if j == me || (best.len() == k && (v < best[k - 1].0 || (v == best[k - 1].0 && j > best[k - 1].1 as usize))) {
            continue;
        }
        let at = best.partition_point(|&(bv, bj)| bv > v || (bv == v && (bj as usize) < j));
        best.insert(at, (v, j as u32));
        best.truncate(k);
    }
    best
}

/// How well the neighbours of labelled documents predict their category.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores {
    /// Mean over documents of the share of their k neighbours with the same category.
    pub agreement: f64,
    /// Leave-one-out kNN classification: the category most frequent among the k neighbours (a tie goes to the tied
    /// category of the nearest neighbour), right or wrong.
    pub knn_accuracy: f64,
    /// The documents scored.
    pub documents: usize,
}

/// Scores `neighbors` (n×k, nearest first, indices into `labels`) where every document has a category id.
pub fn label_scores(neighbors: &[u32], k: usize, labels: &[u32]) -> Option<LabelScores> {
    let all: Vec<usize> = (0..labels.len()).collect();
    label_scores_of(neighbors, k, labels, &all)
}

/// [`label_scores`] of the documents `queries` only (their neighbours among all the documents).
pub fn label_scores_of(neighbors: &[u32], k: usize, labels: &[u32], queries: &[usize]) -> Option<LabelScores> {
    let n = labels.len();
    if queries.is_empty() || k == 0 || neighbors.len() != n * k || queries.iter().any(|&q| q >= n) {
        return None;
    }
    let mut agreement = 0.0;
    let mut right = 0usize;
    let mut votes: Vec<(u32, usize)> = Vec::with_capacity(k);
    for &i in queries {
        let label = labels[i];
        let nb = &neighbors[i * k..(i + 1) * k];
        agreement += nb.iter().filter(|&&j| labels[j as usize] == label).count() as f64 / k as f64;
        // Votes in order of first appearance, so the first maximum is the nearest of the tied categories.
        votes.clear();
        for &j in nb {
            let c = labels[j as usize];
            match votes.iter_mut().find(|(vc, _)| *vc == c) {
                Some(v) => v.1 += 1,
                None => votes.push((c, 1)),
            }
        }
        let top = votes.iter().map(|v| v.1).max().unwrap_or(0);
        let predicted = votes.iter().find(|v| v.1 == top).map(|v| v.0);
        right += usize::from(predicted == Some(label));
    }
    let q = queries.len();
    Some(LabelScores { agreement: agreement / q as f64, knn_accuracy: right as f64 / q as f64, documents: q })
}

/// What chance gives: the expected label agreement of neighbours drawn at random from the other documents,
/// Σ_c n_c (n_c − 1) / (n (n − 1)), and the majority-class rate (the accuracy of always guessing the largest
/// category). `counts` are the documents per category.
pub fn chance(counts: &[usize]) -> (f64, f64) {
    let n: usize = counts.iter().sum();
    if n < 2 {
        return (f64::NAN, f64::NAN);
    }
    let same: f64 = counts.iter().map(|&c| c as f64 * c.saturating_sub(1) as f64).sum();
    let majority = counts.iter().copied().max().unwrap_or(0) as f64 / n as f64;
    (same / (n as f64 * (n - 1) as f64), majority)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(rows: &[&[(u32, f64)]], cols: usize) -> Csr {
        let mut indptr = vec![0];
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for r in rows {
            for &(c, v) in *r {
                indices.push(c);
                values.push(v);
            }
            indptr.push(indices.len());
        }
        Csr { rows: rows.len(), cols, indptr, indices, values }
    }

    #[test]
    fn sparse_neighbours_equal_dense_cosines() {
        // Rows: a = (1, 0, 0), b = (1, 1, 0), c = (0, 0, 2), d = (0, 0, 0), e = (2, 2, 0).
        let x = csr(&[&[(0, 1.0)], &[(0, 1.0), (1, 1.0)], &[(2, 2.0)], &[], &[(0, 2.0), (1, 2.0)]], 3);
        let (idx, sim) = sparse_cosine_top_k(&x, 2);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        // a: b and e both at 1/√2, b first (smaller index).
        assert_eq!(&idx[0..2], &[1, 4]);
        assert!((sim[0] - h).abs() < 1e-6 && (sim[1] - h).abs() < 1e-6);
        // b: e at 1, then a at 1/√2.
        assert_eq!(&idx[2..4], &[4, 0]);
        assert!((sim[2] - 1.0).abs() < 1e-6);
        // c shares nothing: every cosine is 0 and ties go to the smaller index.
        assert_eq!(&idx[4..6], &[0, 1]);
        assert_eq!(&sim[4..6], &[0.0, 0.0]);
        // The empty row likewise.
        assert_eq!(&idx[6..8], &[0, 1]);
        // k is capped at n - 1.
        let (idx, _) = sparse_cosine_top_k(&x, 10);
        assert_eq!(idx.len(), 5 * 4);
    }

    #[test]
    fn label_scores_by_hand() {
        // Four documents, categories 0 0 1 1, k = 2.
        let labels = [0, 0, 1, 1];
        let nb = [1, 2, /* */ 0, 3, /* */ 3, 0, /* */ 0, 1];
        let s = label_scores(&nb, 2, &labels).expect("scores");
        // Agreement: 1/2, 1/2, 1/2, 0.
        assert!((s.agreement - 1.5 / 4.0).abs() < 1e-12);
        // kNN: doc 0 votes {0, 1} tie -> nearest (1's category 0): right. doc 1 {0, 1} -> 0: right.
        // doc 2 {1, 0} -> 1: right. doc 3 {0, 0} -> 0: wrong.
        assert!((s.knn_accuracy - 0.75).abs() < 1e-12);
        assert_eq!(s.documents, 4);
    }

    #[test]
    fn chance_by_hand() {
        // 3 and 1 documents: pairs of the same category 3·2 + 0 over 4·3.
        let (agree, majority) = chance(&[3, 1]);
        assert!((agree - 0.5).abs() < 1e-12);
        assert!((majority - 0.75).abs() < 1e-12);
        assert!(chance(&[1]).0.is_nan());
    }
}
