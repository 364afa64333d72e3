//! Ranks of held-out targets among all items (the CPU twin of shaders/ranking.wgsl), and the held-out ranking and
//! loss a block of items at a time.

use rayon::prelude::*;

use super::gemm::gemm_seq;
use super::holds;
use super::simd::*;
use crate::backend::MatDims;
use crate::error::{Error, Result};

/// Target ranks with masks.
pub fn target_ranks(
    scores: &[f32],
    cols: usize,
    targets: &[u32],
    mask_items: &[u32],
    mask_offsets: &[u32],
    ranks: &mut [f32],
) {
    ranks.par_iter_mut().enumerate().for_each(|(r, out)| {
        let row = &scores[r * cols..(r + 1) * cols];
        let t = targets[r] as usize;
        let st = row[t];
        let mut higher = count_above(row, st);
        for &mi in &mask_items[mask_offsets[r] as usize..mask_offsets[r + 1] as usize] {
            if mi as usize != t && row[mi as usize] > st {
                higher = higher.saturating_sub(1); // a mask that names an item twice
            }
        }
        *out = (higher + 1) as f32;
    });
}

/// Items per block of [`rank_and_loss`]: 256 rows of scores over 1,024 items are 1 MB, within a core's L2.
pub const RANK_BLOCK: usize = 1024;

thread_local! {
    /// A thread's block of scores in [`rank_and_loss`] (rows × [`RANK_BLOCK`] values, at most 1 MB for a batch
    /// of 256), kept for the next call.
    static RANK_SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One row's share of a block in [`rank_and_loss`]: how many scores beat the target's, the block's largest score
/// and the sum of `e^(s − largest)`.
#[derive(Debug, Clone, Copy)]
struct RankPart {
    above: u32,
    max: f32,
    sum: f32,
}

/// [`crate::backend::Backend::rank_and_loss`] on the CPU: the scores `pre·W2 + b` of all rows against a block of
/// [`RANK_BLOCK`] items at a time, one block per task, never more than a block of scores per thread (the unfused
/// path holds rows × v of them: 1 GB for 256 rows at 10^6 items). Each block counts, per row, the unmasked items
/// scoring above the row's target, and its part of the log-sum-exp; the parts are combined in block order (f64),
/// so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn rank_and_loss(
    pre: &[f32],
    w2: &[f32],
    item_major: bool,
    bias: &[f32],
    d: MatDims,
    targets: &[u32],
    mask_items: &[u32],
    mask_offsets: &[u32],
    ranks: &mut [f32],
    losses: &mut [f32],
) -> Result<()> {
    use faer::MatRef;
    let MatDims { m: rows, n: v, k } = d;
    let masks_ok = mask_offsets.len() > rows
        && mask_offsets[..=rows].windows(2).all(|w| w[0] <= w[1])
        && mask_offsets[rows] as usize <= mask_items.len()
        && mask_items[..mask_offsets[rows] as usize].iter().all(|&i| (i as usize) < v);
    if !holds(pre.len(), &[rows, k])
        || !holds(w2.len(), &[k, v])
        || bias.len() < v
        || targets.len() < rows
        || targets[..rows].iter().any(|&t| t as usize >= v)
        || ranks.len() < rows
        || losses.len() < rows
        || !masks_ok
    {
        return Err(Error::Internal(format!("rank_and_loss {rows}×{v}×{k}: an operand is too small or out of range")));
    }
    if rows == 0 {
        return Ok(());
    }
    let p = MatRef::from_row_major_slice(&pre[..rows * k], rows, k);
    let w = if item_major {
        MatRef::from_row_major_slice(&w2[..k * v], v, k).transpose()
    } else {
        MatRef::from_row_major_slice(&w2[..k * v], k, v)
    };
    let targets = &targets[..rows];
    let target_score = target_scores(p, w, bias, targets);
    let masks = (mask_items, mask_offsets);
    let parts: Vec<Vec<RankPart>> = (0..v.div_ceil(RANK_BLOCK))
        .into_par_iter()
        .map(|b| block_parts(b, p, w, bias, targets, &target_score, masks))
        .collect();
    for r in 0..rows {
        let (mut above, mut max, mut sum) = (0u64, f64::NEG_INFINITY, 0.0f64);
        for part in &parts {
            let RankPart { above: a, max: m, sum: s } = part[r];
            above += u64::from(a);
            let (m, s) = (f64::from(m), f64::from(s));
            if m > max {
                sum = sum * (max - m).exp() + s;
                max = m;
            } else {
                sum += s * (m - max).exp();
            }
        }
        ranks[r] = (above + 1) as f32;
        // loss = log Σ e^s − s_target.
        losses[r] = (max + sum.ln() - f64::from(target_score[r])) as f32;
    }
    Ok(())
}

/// The targets' scores: the diagonal of pre · W2[:, targets] plus their bias, the same k multiply-adds as the
/// target's entry in its block's product (the unit test checks the resulting ranks, ties included, against full
/// logits). Should a kernel ever order them differently and the two differ in the last bit, the target is still
/// excluded by index when its block is counted, so it can never count itself.
fn target_scores(p: faer::MatRef<'_, f32>, w: faer::MatRef<'_, f32>, bias: &[f32], targets: &[u32]) -> Vec<f32> {
    use faer::{Accum, MatMut, MatRef};
    let (rows, k) = (p.nrows(), p.ncols());
    let mut picked = vec![0f32; k * rows];
    for (r, &t) in targets.iter().enumerate() {
        for c in 0..k {
            picked[c * rows + r] = w[(c, t as usize)];
        }
    }
    let mut diag = vec![0f32; rows * rows];
    let wt = MatRef::from_row_major_slice(&picked, k, rows);
    gemm_seq(MatMut::from_row_major_slice_mut(&mut diag, rows, rows), Accum::Replace, p, wt, 1.0);
    (0..rows).map(|r| diag[r * rows + r] + bias[targets[r] as usize]).collect()
}

/// Block `b` of [`rank_and_loss`]: its scores (rows × its width, in the thread's kept buffer: a fresh megabyte per
/// task cost its page faults every time, a third of the time at 10^4 items), then per row the unmasked items
/// above the target and the block's part of the log-sum-exp.
fn block_parts(
    b: usize,
    p: faer::MatRef<'_, f32>,
    w: faer::MatRef<'_, f32>,
    bias: &[f32],
    targets: &[u32],
    target_score: &[f32],
    (mask_items, mask_offsets): (&[u32], &[u32]),
) -> Vec<RankPart> {
    let (rows, v) = (p.nrows(), w.ncols());
    let (b0, len) = (b * RANK_BLOCK, RANK_BLOCK.min(v - b * RANK_BLOCK));
    RANK_SCRATCH.with_borrow_mut(|buf| {
        buf.resize(rows * len, 0.0);
        let out = &mut buf[..rows * len];
        let dst = faer::MatMut::from_row_major_slice_mut(out, rows, len);
        gemm_seq(dst, faer::Accum::Replace, p, w.subcols(b0, len), 1.0);
        for row in out.chunks_exact_mut(len) {
            for (x, &bi) in row.iter_mut().zip(&bias[b0..b0 + len]) {
                *x += bi;
            }
        }
        out.chunks_exact_mut(len)
            .enumerate()
            .map(|(r, row)| {
                let (st, t) = (target_score[r], targets[r] as usize);
                let mut above = count_above(row, st);
                if (b0..b0 + len).contains(&t) && row[t - b0] > st {
                    above = above.saturating_sub(1);
                }
                let masked = &mask_items[mask_offsets[r] as usize..mask_offsets[r + 1] as usize];
                for &mi in masked {
                    let mi = mi as usize;
                    if mi != t && (b0..b0 + len).contains(&mi) && row[mi - b0] > st {
                        above = above.saturating_sub(1); // a mask that names an item twice
                    }
                }
                let (max, sum) = exp_shifted_dispatch(row);
                RankPart { above: above as u32, max, sum }
            })
            .collect()
    })
}

multiversion!(fn count_above / count_above_generic(row: &[f32], x: f32) -> usize);

#[inline(always)]
fn count_above_generic(row: &[f32], x: f32) -> usize {
    row.iter().map(|&s| (s > x) as u32).sum::<u32>() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{matmul, softmax_xent};

    #[test]
    fn blocked_ranking_equals_full_logits() {
        let (rows, v, k) = (37, 2 * RANK_BLOCK + 301, 24);
        let mut rng = crate::linalg::rng::SplitMix::new(11);
        let mut uniform = |n: usize| (0..n).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect::<Vec<f32>>();
        let pre = uniform(rows * k);
        let mut w2 = uniform(k * v); // k × v
        let bias = uniform(v);
        // Ties: item 5 duplicates item 4 (column and bias), and item 2,000 duplicates item 7.
        for c in 0..k {
            w2[c * v + 5] = w2[c * v + 4];
            w2[c * v + 2000] = w2[c * v + 7];
        }
        let mut bias = bias;
        bias[5] = bias[4];
        bias[2000] = bias[7];
        let targets: Vec<u32> = (0..rows)
            .map(|r| [4u32, 7, 2000, 5][r % 4] + if r >= 4 { (r * 97 % v) as u32 } else { 0 })
            .map(|t| t % v as u32)
            .collect();
        let mut mask_items = Vec::new();
        let mut mask_offsets = vec![0u32];
        for (r, &t) in targets.iter().enumerate() {
            mask_items.extend((0..r % 5).map(|i| ((r * 31 + i * 977) % v) as u32));
            mask_items.push(t); // a mask may name the target itself: it still counts as the target
            mask_offsets.push(mask_items.len() as u32);
        }
        let item_major: Vec<f32> = (0..v * k).map(|i| w2[(i % k) * v + i / k]).collect();
        let d = MatDims { m: rows, n: v, k };
        let mut logits = vec![0f32; rows * v];
        matmul(&pre, false, &w2, false, &mut logits, d, 0.0).expect("matmul");
        for row in logits.chunks_exact_mut(v) {
            row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
        }
        let mut want_ranks = vec![0f32; rows];
        target_ranks(&logits, v, &targets, &mask_items, &mask_offsets, &mut want_ranks);
        let mut want_losses = vec![0f32; rows];
        softmax_xent(&mut logits, &targets, v, &mut want_losses);
        for (w, major) in [(&w2, false), (&item_major, true)] {
            let (mut ranks, mut losses) = (vec![0f32; rows], vec![0f32; rows]);
            rank_and_loss(&pre, w, major, &bias, d, &targets, &mask_items, &mask_offsets, &mut ranks, &mut losses)
                .expect("ranks");
            assert_eq!(ranks, want_ranks, "item-major {major}");
            for (a, b) in losses.iter().zip(&want_losses) {
                assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "loss {a} vs {b}");
            }
        }
        // A target out of range is an error, not a panic.
        let mut bad = targets.clone();
        bad[0] = v as u32;
        let (mut ranks, mut losses) = (vec![0f32; rows], vec![0f32; rows]);
        assert!(rank_and_loss(&pre, &w2, false, &bias, d, &bad, &mask_items, &mask_offsets, &mut ranks, &mut losses)
            .is_err());
    }
}
