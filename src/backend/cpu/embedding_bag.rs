//! Gather-and-pool over bags of items and its gradient as a segment sum: the CPU twins of shaders/embedding_bag.wgsl.

use rayon::prelude::*;

/// Sum of a bag's weights (its size when every weight is 1).
#[inline]
fn bag_weight(weights: &[f32], offsets: &[u32], r: usize) -> f32 {
    weights[offsets[r] as usize..offsets[r + 1] as usize].iter().sum()
}

/// Gather-and-pool over bags: `out[r] = Σ w_j · table[items[j]]`, divided by `Σ w_j` with mean pooling.
pub fn embedding_bag(
    table: &[f32],
    dim: usize,
    items: &[u32],
    offsets: &[u32],
    weights: &[f32],
    mean: bool,
    out: &mut [f32],
) {
    out.par_chunks_mut(dim.max(1)).enumerate().for_each(|(r, row)| {
        row.iter_mut().for_each(|x| *x = 0.0);
        let (lo, hi) = (offsets[r] as usize, offsets[r + 1] as usize);
        for (&it, &w) in items[lo..hi].iter().zip(&weights[lo..hi]) {
            let src = &table[it as usize * dim..(it as usize + 1) * dim];
            for (o, &s) in row.iter_mut().zip(src) {
                *o += w * s;
            }
        }
        let total = bag_weight(weights, offsets, r);
        if mean && total > 0.0 {
            let inv = 1.0 / total;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    });
}

/// Segment sum of the pooled gradient into the embedding gradient (zeroed first).
#[allow(clippy::too_many_arguments)]
pub fn embedding_bag_backward(
    d_pooled: &[f32],
    dim: usize,
    offsets: &[u32],
    weights: &[f32],
    seg_items: &[u32],
    seg_offsets: &[u32],
    seg_examples: &[u32],
    seg_weights: &[f32],
    mean: bool,
    grad: &mut [f32],
    zero_others: bool,
) {
    if zero_others {
        grad.iter_mut().for_each(|x| *x = 0.0);
    }
    for (s, &item) in seg_items.iter().enumerate() {
        let dst = &mut grad[item as usize * dim..(item as usize + 1) * dim];
        dst.fill(0.0);
        let span = seg_offsets[s] as usize..seg_offsets[s + 1] as usize;
        for (&e, &w) in seg_examples[span.clone()].iter().zip(&seg_weights[span]) {
            let e = e as usize;
            let scale = if mean { w * (1.0 / bag_weight(weights, offsets, e)) } else { w };
            for (g, &x) in dst.iter_mut().zip(&d_pooled[e * dim..(e + 1) * dim]) {
                *g += x * scale;
            }
        }
    }
}
