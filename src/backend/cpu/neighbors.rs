//! Cosine nearest neighbours of every row, in blocks of rows against blocks of rows (the CPU twin of
//! shaders/neighbors.wgsl).

use rayon::prelude::*;

use super::simd::*;
use crate::error::{Error, Result};

/// Items per block of the neighbour search: a pair of blocks is 256 × 256 scores, never stored (see
/// [`cosine_top_k`]); one block's vectors at 32 dimensions are 32 KB, within the L1 cache.
pub const NEIGHBOR_BLOCK: usize = 256;

/// The `k` nearest rows by cosine of every row of `x` (n×dim), itself excluded, ties to the smaller index.
///
/// Each unordered pair of items is scored once: the items are cut into blocks, and the pair of blocks (I, J ≥ I)
/// feeds row i's list with column j and column j's list with row i. Scores never reach memory: a micro-kernel keeps
/// 12 rows × 16 columns of them in registers (fused multiply-adds over the dimensions, the columns read from
/// 16-item panels), compares them with the 12 rows' and the 16 columns' current k-th best, and only a score that
/// beats one goes to the list. The block pairs run in diagonal waves (J − I = s): within a wave no two pairs share
/// a row block or a column block, so the lists need no locks, and each item's final list (the best of its row-side
/// and column-side lists) does not depend on the thread count. Memory: two k-long lists per item.
pub fn cosine_top_k(x: &[f32], n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    cosine_top_k_blocked(x, n, dim, k, NEIGHBOR_BLOCK)
}

/// The best-k lists of one block of items, flat: per slot its length, (score, index) pairs best first, and the
/// score a candidate must reach (−∞ until the list is full; +∞ for the padding slots after the last item).
struct BestLists {
    k: usize,
    len: Vec<u32>,
    score: Vec<f32>,
    idx: Vec<u32>,
    threshold: Vec<f32>,
}

/// Whether (score, index) `a` ranks before `b`: a higher score, or an equal one with a smaller index.
#[inline(always)]
fn ranks_before(a: (f32, u32), b: (f32, u32)) -> bool {
    a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
}

impl BestLists {
    fn new(slots: usize, real: usize, k: usize) -> BestLists {
        let threshold = (0..slots).map(|s| if s < real { f32::NEG_INFINITY } else { f32::INFINITY }).collect();
        BestLists { k, len: vec![0; slots], score: vec![0.0; slots * k], idx: vec![0; slots * k], threshold }
    }

    /// Offers item `j` at score `s` to slot `slot`: kept if the list is not full or it beats the k-th best (a
    /// higher score, or an equal one with a smaller index). NaN scores are never kept.
    #[inline(never)]
    fn offer(&mut self, slot: usize, s: f32, j: u32) {
        if s.is_nan() {
            return;
        }
        let (k, len) = (self.k, self.len[slot] as usize);
        let sc = &mut self.score[slot * k..(slot + 1) * k];
        let ix = &mut self.idx[slot * k..(slot + 1) * k];
        let beats = |t: usize| ranks_before((s, j), (sc[t], ix[t]));
        if len == k && !beats(k - 1) {
            return;
        }
        let at = (0..len).find(|&t| beats(t)).unwrap_or(len);
        let end = len.min(k - 1);
        sc.copy_within(at..end, at + 1);
        ix.copy_within(at..end, at + 1);
        sc[at] = s;
        ix[at] = j;
        let len = (len + 1).min(k);
        self.len[slot] = len as u32;
        if len == k {
            self.threshold[slot] = sc[k - 1];
        }
    }

    fn list(&self, slot: usize) -> impl Iterator<Item = (f32, u32)> + '_ {
        let len = self.len[slot] as usize;
        let at = slot * self.k;
        self.score[at..at + len].iter().copied().zip(self.idx[at..at + len].iter().copied())
    }
}

/// Rows and columns of the register tile: 12 × 16 scores in 12 vector registers (on 100,000 × 32, tiles of 8
/// rows took 3.3–4.3 s, 10–12 rows 2.8–3.1 s, 16 rows spilled to memory: 42 s).
const TILE_ROWS: usize = 12;

const TILE_COLS: usize = 16;

/// The unit vectors as panels of 16 items (dimension-major within a panel: the 16 items' d-th values side by side),
/// padded with zero vectors to whole panels. The row tiles are gathered from them too, so the search holds one copy.
struct UnitVectors {
    dim: usize,
    panels: Vec<f32>,
}

multiversion!(fn block_pair / block_pair_generic(u: &UnitVectors, n: usize, pair: (usize, usize, usize), rows: &mut BestLists, cols: Option<&mut BestLists>));

/// Scores rows of block `bi` against columns of block `bj` and offers each score that beats a current k-th best:
/// to the row's list, and (off the diagonal, `cols`) to the column's. Its one allocation, the row tile (12 × d
/// floats), is made per block pair (76,000 small allocations at 100,000 items, next to 5·10⁹ scores). Passing a
/// caller's scratch `Vec` instead measured 65 s instead of 3.6 s there: the micro-kernel's accumulators no longer
/// stayed in registers.
#[inline(always)]
fn block_pair_generic(
    u: &UnitVectors,
    n: usize,
    (bi, bj, block): (usize, usize, usize),
    rows: &mut BestLists,
    mut cols: Option<&mut BestLists>,
) {
    let d = u.dim;
    let (r0, r1) = (bi * block, ((bi + 1) * block).min(n));
    let (c0, c1) = (bj * block, ((bj + 1) * block).min(n));
    // The tile's rows dimension-major (the 12 rows' d-th values side by side), zero rows past the block's end.
    let mut rowt = vec![0.0f32; TILE_ROWS * d];
    for rg in (r0..r1).step_by(TILE_ROWS) {
        let nr = TILE_ROWS.min(r1 - rg);
        rowt.fill(0.0);
        for r in 0..nr {
            let (g, l) = ((rg + r) / TILE_COLS, (rg + r) % TILE_COLS);
            for dd in 0..d {
                rowt[dd * TILE_ROWS + r] = u.panels[(g * d + dd) * TILE_COLS + l];
            }
        }
        for cg in (c0..c1).step_by(TILE_COLS) {
            let panel = &u.panels[(cg / TILE_COLS) * d * TILE_COLS..(cg / TILE_COLS + 1) * d * TILE_COLS];
            let mut acc = [[0.0f32; TILE_COLS]; TILE_ROWS];
            for (v, a) in panel.chunks_exact(TILE_COLS).zip(rowt.chunks_exact(TILE_ROWS)) {
                let v: &[f32; TILE_COLS] = v.try_into().unwrap_or(&[0.0; TILE_COLS]);
                let a: &[f32; TILE_ROWS] = a.try_into().unwrap_or(&[0.0; TILE_ROWS]);
                for r in 0..TILE_ROWS {
                    for l in 0..TILE_COLS {
                        acc[r][l] = a[r].mul_add(v[l], acc[r][l]);
                    }
                }
            }
            for (r, scores) in acc.iter().enumerate().take(nr) {
                let i = rg + r;
                let t = rows.threshold[i - r0];
                let mut hit = false;
                for &s in scores {
                    hit |= s >= t;
                }
                if hit {
                    for (l, &s) in scores.iter().enumerate() {
                        let j = cg + l;
                        if j < c1 && j != i {
                            rows.offer(i - r0, s, j as u32);
                        }
                    }
                }
                if let Some(cols) = cols.as_deref_mut() {
                    let ct = &cols.threshold[cg - c0..cg - c0 + TILE_COLS];
                    let mut hit = false;
                    for l in 0..TILE_COLS {
                        hit |= scores[l] >= ct[l];
                    }
                    if hit {
                        for (l, &s) in scores.iter().enumerate() {
                            if cg + l < c1 && s >= cols.threshold[cg + l - c0] {
                                cols.offer(cg + l - c0, s, i as u32);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`cosine_top_k`] with a given block size (a multiple of 16; tests use small blocks to cross many borders).
pub fn cosine_top_k_blocked(x: &[f32], n: usize, dim: usize, k: usize, block: usize) -> Result<(Vec<u32>, Vec<f32>)> {
    if block == 0 || !block.is_multiple_of(TILE_COLS) {
        return Err(Error::Internal(format!("cosine_top_k: block {block} is not a multiple of {TILE_COLS}")));
    }
    let x = x.get(..n * dim).ok_or_else(|| Error::Internal("cosine_top_k: shape".into()))?;
    let k = k.min(n.saturating_sub(1));
    let mut idx = vec![0u32; n * k];
    let mut sim = vec![0f32; n * k];
    if k == 0 || dim == 0 {
        return Ok((idx, sim));
    }
    let groups = n.div_ceil(TILE_COLS);
    let mut panels = vec![0.0f32; groups * dim * TILE_COLS];
    for (i, row) in x.chunks(dim).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        let (g, l) = (i / TILE_COLS, i % TILE_COLS);
        for (dd, &v) in row.iter().enumerate() {
            panels[(g * dim + dd) * TILE_COLS + l] = if norm > 0.0 { v / norm } else { v };
        }
    }
    let u = UnitVectors { dim, panels };
    let blocks = n.div_ceil(block);
    let real = |b: usize| block.min(n - b * block);
    let mut row_side: Vec<BestLists> = (0..blocks).map(|b| BestLists::new(block, real(b), k)).collect();
    let mut col_side: Vec<BestLists> = (0..blocks).map(|b| BestLists::new(block, real(b), k)).collect();
    for s in 0..blocks {
        row_side[..blocks - s]
            .par_iter_mut()
            .zip(col_side[s..].par_iter_mut())
            .enumerate()
            .for_each(|(bi, (rows, cols))| block_pair(&u, n, (bi, bi + s, block), rows, (s > 0).then_some(cols)));
    }
    // Each item's neighbours: the best k of its row-side list (items in its block and after) and its column-side
    // list (items in earlier blocks), two disjoint sorted lists.
    for item in 0..n {
        let (b, slot) = (item / block, item % block);
        let (mut p, mut q) = (row_side[b].list(slot).peekable(), col_side[b].list(slot).peekable());
        for t in 0..k {
            let next = match (p.peek(), q.peek()) {
                (Some(&a), Some(&c)) => {
                    if ranks_before(a, c) {
                        p.next()
                    } else {
                        q.next()
                    }
                }
                (Some(_), None) => p.next(),
                (None, _) => q.next(),
            };
            let Some((v, j)) = next else { break };
            idx[item * k + t] = j;
            sim[item * k + t] = v;
        }
    }
    Ok((idx, sim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_neighbours_equal_brute_force() {
        let (n, dim, k) = (300, 5, 4);
        let mut state = 12345u64;
        let mut x: Vec<f32> = (0..n * dim)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        // Row 200 repeats row 10: each is the other's nearest, at cosine 1.
        let copy = x[10 * dim..11 * dim].to_vec();
        x[200 * dim..201 * dim].copy_from_slice(&copy);
        let (idx, sim) = cosine_top_k_blocked(&x, n, dim, k, 16).expect("blocked");
        let cos = |a: usize, b: usize| {
            let (p, q) = (&x[a * dim..(a + 1) * dim], &x[b * dim..(b + 1) * dim]);
            let dot: f64 = p.iter().zip(q).map(|(&u, &v)| u as f64 * v as f64).sum();
            let norm = |r: &[f32]| r.iter().map(|&u| (u as f64).powi(2)).sum::<f64>().sqrt();
            dot / (norm(p) * norm(q))
        };
        for r in 0..n {
            let mut all: Vec<(f64, usize)> = (0..n).filter(|&j| j != r).map(|j| (cos(r, j), j)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            for i in 0..k {
                assert!((sim[r * k + i] as f64 - all[i].0).abs() < 1e-5, "row {r} rank {i}");
                assert!((cos(r, idx[r * k + i] as usize) - all[i].0).abs() < 1e-5, "row {r} rank {i}");
            }
        }
        assert_eq!(idx[10 * k], 200);
        assert_eq!(idx[200 * k], 10);
        // One block holding every item (the diagonal pair only) gives the same lists and cosines.
        let (idx1, sim1) = cosine_top_k_blocked(&x, n, dim, k, 304).expect("one block");
        assert_eq!(idx1, idx);
        assert_eq!(sim1, sim);
    }
}
