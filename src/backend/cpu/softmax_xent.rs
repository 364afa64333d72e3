//! Softmax cross-entropy (the CPU twin of shaders/softmax_xent.wgsl) and the full output layer of a training step
//! fused a block of items at a time.

use rayon::prelude::*;

use super::gemm::{gemm_seq, SendPtr};
use super::holds;
use super::simd::*;
use crate::backend::MatDims;
use crate::error::{Error, Result};

/// Fused softmax cross-entropy: logits become the gradient of the mean loss; `losses[r]` the row's loss.
/// Sums run over 16 fixed lanes, so the result does not depend on the thread count or the CPU's vector width.
pub fn softmax_xent(logits: &mut [f32], targets: &[u32], cols: usize, losses: &mut [f32]) {
    let rows = losses.len();
    let inv_rows = 1.0 / rows as f32;
    logits.par_chunks_mut(cols).zip(losses.par_iter_mut()).enumerate().for_each(|(r, (row, loss))| {
        *loss = softmax_xent_row(row, targets[r] as usize, inv_rows);
    });
}

multiversion!(fn softmax_xent_row / softmax_xent_row_generic(row: &mut [f32], t: usize, inv_rows: f32) -> f32);

#[inline(always)]
fn softmax_xent_row_generic(row: &mut [f32], t: usize, inv_rows: f32) -> f32 {
    let target_logit = row[t];
    let (max, sum) = exp_shifted(row);
    let scale = inv_rows / sum;
    for v in row.iter_mut() {
        *v *= scale;
    }
    row[t] -= inv_rows;
    // loss = log Σ e^(x − max) − (x_t − max).
    ((sum as f64).ln() - (target_logit - max) as f64) as f32
}

/// Items per column block of [`output_layer_xent`]: a block of 256 rows' logits over 256 items is 256 KB, which
/// stays in a core's L2 from the softmax through both gradient products.
pub const OUTPUT_BLOCK: usize = 256;

/// Column blocks are taken in at most this many groups by [`output_layer_xent`]'s backward phase; each group sums
/// its blocks' share of the input gradient in block order, and the groups' sums are added in group order.
const OUTPUT_GROUPS: usize = 16;

/// The operands of [`output_layer_xent`]: the input activation `pre` (rows × k), the weight `w` (k × items), the
/// bias (items) and each row's target item, with `d` = (m rows, n items, k inputs).
#[derive(Debug, Clone, Copy)]
pub struct OutputLayerIn<'a> {
    pub pre: &'a [f32],
    pub w: &'a [f32],
    pub bias: &'a [f32],
    pub targets: &'a [u32],
    pub d: MatDims,
}

/// The results of [`output_layer_xent`]: each row's loss, the gradients of the mean loss for the weight (k × items),
/// the bias and the input (rows × k), and a workspace for the rows × items logits (left holding scratch values).
#[derive(Debug)]
pub struct OutputLayerOut<'a> {
    pub logits: &'a mut [f32],
    pub losses: &'a mut [f32],
    pub w_grad: &'a mut [f32],
    pub bias_grad: &'a mut [f32],
    pub pre_grad: &'a mut [f32],
}

/// One row's share of a column block in [`output_layer_xent`]: the block's largest logit, the sum of
/// `e^(logit − largest)` over the block, and the row's target logit where the target lies in the block.
#[derive(Debug, Clone, Copy, Default)]
struct BlockStat {
    max: f32,
    sum: f32,
    target: f32,
}

/// [`crate::backend::Backend::output_layer_xent`] on the CPU: the output layer's logits, softmax cross-entropy and
/// all three gradients, a block of [`OUTPUT_BLOCK`] items at a time, so that a block's logits are produced,
/// turned into gradients and consumed by both gradient products while they are in cache: the logits go to memory
/// once and come back once (the unfused sequence moves them five times).
///
/// 1. Per block, in parallel: the block's logits `pre · W[:, block] + bias`, each row's block maximum, its
///    exponentials `e^(x − max)` in place and their sum (the workspace holds the blocks one after the other, each
///    rows × width, row-major).
/// 2. Per row: the overall maximum, the sum over blocks (in block order, f64) and the loss.
/// 3. Per group of blocks, in parallel: each block's exponentials scaled into the gradient
///    `(softmax − onehot) / rows`, its column sums (the bias gradient, rows in order), `preᵀ · G` (the weight
///    gradient's columns) and `G · W[:, block]ᵀ` added to the group's input gradient; then the groups' input
///    gradients are summed in group order.
///
/// Blocks and groups depend on the shape only, so the result does not depend on the thread count.
pub fn output_layer_xent(x: OutputLayerIn<'_>, out: OutputLayerOut<'_>) -> Result<()> {
    use faer::MatRef;
    let MatDims { m: rows, n: v, k } = x.d;
    let OutputLayerOut { logits, losses, w_grad, bias_grad, pre_grad } = out;
    if !holds(x.pre.len(), &[rows, k])
        || !holds(x.w.len(), &[k, v])
        || x.bias.len() < v
        || x.targets.len() < rows
        || x.targets[..rows].iter().any(|&t| t as usize >= v)
        || !holds(logits.len(), &[rows, v])
        || losses.len() < rows
        || !holds(w_grad.len(), &[k, v])
        || bias_grad.len() < v
        || !holds(pre_grad.len(), &[rows, k])
    {
        return Err(Error::Internal(format!(
            "output_layer_xent {rows}×{v}×{k}: an operand is too small or a target out of range"
        )));
    }
    if rows > 0 && k == 0 {
        return Err(Error::Internal("output_layer_xent: an output layer without inputs".into()));
    }
    if rows == 0 {
        // No rows (and so no targets to check items against): zero gradients.
        w_grad[..k * v].fill(0.0);
        bias_grad[..v].fill(0.0);
        return Ok(());
    }
    let targets = &x.targets[..rows];
    let pre = MatRef::from_row_major_slice(&x.pre[..rows * k], rows, k);
    let w = MatRef::from_row_major_slice(&x.w[..k * v], k, v);
    let logits = &mut logits[..rows * v];
    let stats = block_logits(pre, w, &x.bias[..v], targets, logits);
    let factors = row_factors(&stats, targets, &mut losses[..rows]);
    let grads = Grads { w: w_grad, bias: bias_grad, pre: pre_grad };
    block_gradients(pre, w, targets, logits, &factors, grads);
    Ok(())
}

/// Phase 1 of [`output_layer_xent`]: per block of items, in parallel, the block's logits `pre · W[:, block] +
/// bias` into `logits` (the blocks one after the other, each rows × width, row-major), its exponentials
/// `e^(x − block max)` in place, and each row's statistics (block by block, rows within a block).
fn block_logits(
    pre: faer::MatRef<'_, f32>,
    w: faer::MatRef<'_, f32>,
    bias: &[f32],
    targets: &[u32],
    logits: &mut [f32],
) -> Vec<BlockStat> {
    let (rows, v) = (pre.nrows(), w.ncols());
    let mut stats = vec![BlockStat::default(); v.div_ceil(OUTPUT_BLOCK) * rows];
    logits.par_chunks_mut(rows * OUTPUT_BLOCK).zip(stats.par_chunks_mut(rows)).enumerate().for_each(
        |(b, (block, st))| {
            let (c0, width) = span(b, v);
            let dst = faer::MatMut::from_row_major_slice_mut(block, rows, width);
            gemm_seq(dst, faer::Accum::Replace, pre, w.subcols(c0, width), 1.0);
            let bias = &bias[c0..c0 + width];
            for ((row, s), &t) in block.chunks_exact_mut(width).zip(st.iter_mut()).zip(targets) {
                *s = block_exponentials(row, bias, (t as usize).wrapping_sub(c0));
            }
        },
    );
    stats
}

/// Block `b`'s first item and width, of `v` items.
fn span(b: usize, v: usize) -> (usize, usize) {
    (b * OUTPUT_BLOCK, OUTPUT_BLOCK.min(v - b * OUTPUT_BLOCK))
}

/// Phase 2 of [`output_layer_xent`]: per row, the loss (into `losses`) and each block's factor from its
/// exponentials to the gradient `(softmax − onehot) / rows` (block by block, rows within a block). The statistics
/// are read block by block, as phase 1 wrote them, every row's sum adding its blocks in block order (f64).
fn row_factors(stats: &[BlockStat], targets: &[u32], losses: &mut [f32]) -> Vec<f32> {
    let rows = targets.len();
    let mut row_max = vec![f32::NEG_INFINITY; rows];
    for st in stats.chunks_exact(rows) {
        for (m, s) in row_max.iter_mut().zip(st) {
            *m = if s.max > *m { s.max } else { *m };
        }
    }
    let mut sums = vec![0.0f64; rows];
    let mut factors = vec![0f32; stats.len()];
    for (st, fs) in stats.chunks_exact(rows).zip(factors.chunks_exact_mut(rows)) {
        for (((f, s), &m), sum) in fs.iter_mut().zip(st).zip(&row_max).zip(sums.iter_mut()) {
            *f = exp_nonpositive(s.max - m);
            *sum += s.sum as f64 * *f as f64;
        }
    }
    for (r, (loss, &t)) in losses.iter_mut().zip(targets).enumerate() {
        let target = stats[t as usize / OUTPUT_BLOCK * rows + r].target;
        *loss = (sums[r].ln() - (target - row_max[r]) as f64) as f32;
    }
    let inv_rows = 1.0 / rows as f64;
    for fs in factors.chunks_exact_mut(rows) {
        for (f, &sum) in fs.iter_mut().zip(&sums) {
            *f = (*f as f64 / sum * inv_rows) as f32;
        }
    }
    factors
}

/// The gradients [`output_layer_xent`] writes: W's (k × items), the bias's (items) and `pre`'s (rows × k).
struct Grads<'a> {
    w: &'a mut [f32],
    bias: &'a mut [f32],
    pre: &'a mut [f32],
}

/// Phase 3 of [`output_layer_xent`]: group by group of consecutive blocks, in parallel, each block's exponentials
/// scaled into the gradient, its column sums (the bias gradient), `preᵀ · G` (W's gradient columns) and
/// `G · W[:, block]ᵀ` added to the group's input gradient; then the groups' input gradients in group order.
fn block_gradients(
    pre: faer::MatRef<'_, f32>,
    w: faer::MatRef<'_, f32>,
    targets: &[u32],
    logits: &mut [f32],
    factors: &[f32],
    grads: Grads<'_>,
) {
    use faer::{Accum, MatMut, MatRef};
    let (rows, k, v) = (pre.nrows(), pre.ncols(), w.ncols());
    let blocks = v.div_ceil(OUTPUT_BLOCK);
    let groups = blocks.min(OUTPUT_GROUPS);
    let first_block = |g: usize| g * blocks / groups;
    let mut work = Vec::with_capacity(groups);
    let (mut lg, mut bg) = (&mut logits[..], &mut grads.bias[..v]);
    for g in 0..groups {
        let (b0, b1) = (first_block(g), first_block(g + 1));
        let (c0, c1) = (span(b0, v).0, span(b1 - 1, v).0 + span(b1 - 1, v).1);
        let (l, l_rest) = std::mem::take(&mut lg).split_at_mut(rows * (c1 - c0));
        let (bb, b_rest) = std::mem::take(&mut bg).split_at_mut(c1 - c0);
        (lg, bg) = (l_rest, b_rest);
        work.push((b0..b1, l, bb));
    }
    let w_grad = &mut grads.w[..k * v];
    let w_grad_ptr = SendPtr(w_grad.as_mut_ptr());
    let inv_rows = 1.0 / rows as f32;
    let parts: Vec<Vec<f32>> = work
        .into_par_iter()
        .map(|(range, group_logits, group_bias)| {
            let mut part = vec![0f32; rows * k];
            let c_first = span(range.start, v).0;
            let mut off = 0;
            for b in range {
                let (c0, width) = span(b, v);
                let block = &mut group_logits[off..off + rows * width];
                off += rows * width;
                let f = &factors[b * rows..(b + 1) * rows];
                block_gradient(block, width, f, targets, c0, inv_rows, &mut group_bias[c0 - c_first..][..width]);
                let g = MatRef::from_row_major_slice(block, rows, width);
                let w_ptr = &w_grad_ptr;
                // SAFETY: `w_grad` holds k × v values (`output_layer_xent` checked its length with checked
                // arithmetic and sliced it to k · v above); this view covers rows 0..k and columns c0..c0 + width of
                // it, with row stride v, and the blocks' column ranges are disjoint, so no two tasks write the same
                // value.
                let dw = unsafe { MatMut::from_raw_parts_mut(w_ptr.0.add(c0), k, width, v as isize, 1) };
                gemm_seq(dw, Accum::Replace, pre.transpose(), g, 1.0);
                let dst = MatMut::from_row_major_slice_mut(&mut part, rows, k);
                let accum = if c0 == c_first { Accum::Replace } else { Accum::Add };
                gemm_seq(dst, accum, g, w.subcols(c0, width).transpose(), 1.0);
            }
            part
        })
        .collect();
    let pre_grad = &mut grads.pre[..rows * k];
    pre_grad.copy_from_slice(&parts[0]);
    for part in &parts[1..] {
        axpy_f32(pre_grad, part);
    }
}

multiversion!(fn block_exponentials / block_exponentials_generic(row: &mut [f32], bias: &[f32], target: usize) -> BlockStat);

/// One row of a block in [`output_layer_xent`]'s first phase: adds the bias, keeps the target's logit (`target`:
/// its column in the block, out of range when elsewhere) and replaces the logits by `e^(x − block max)`.
#[inline(always)]
fn block_exponentials_generic(row: &mut [f32], bias: &[f32], target: usize) -> BlockStat {
    for (x, &b) in row.iter_mut().zip(bias) {
        *x += b;
    }
    let target = row.get(target).copied().unwrap_or(0.0);
    let (max, sum) = exp_shifted(row);
    BlockStat { max, sum, target }
}

multiversion!(fn block_gradient / block_gradient_generic(block: &mut [f32], width: usize, factors: &[f32], targets: &[u32], c0: usize, inv_rows: f32, bias_grad: &mut [f32]));

/// One block in [`output_layer_xent`]'s third phase: exponentials times their row's factor, less `1 / rows` at the
/// target, and the column sums of the result (rows in order) into `bias_grad`.
#[inline(always)]
fn block_gradient_generic(
    block: &mut [f32],
    width: usize,
    factors: &[f32],
    targets: &[u32],
    c0: usize,
    inv_rows: f32,
    bias_grad: &mut [f32],
) {
    bias_grad.fill(0.0);
    for ((row, &f), &t) in block.chunks_exact_mut(width).zip(factors).zip(targets) {
        for x in row.iter_mut() {
            *x *= f;
        }
        if let Some(x) = row.get_mut((t as usize).wrapping_sub(c0)) {
            *x -= inv_rows;
        }
        for (g, &x) in bias_grad.iter_mut().zip(row.iter()) {
            *g += x;
        }
    }
}
