//! The model kernels of the CPU backend on plain slices: the reference each GPU kernel is tested against.
//! Row-parallel with rayon where rows are independent; every sum runs in a fixed order.

use rayon::prelude::*;

use super::{Activation, AdamStep, MatDims, PoolMode};
use crate::error::{Error, Result};
use crate::linalg::sparse::Csr;

/// `c = op(a)·op(b) + beta·c`, row-major, through faer's GEMM (AVX-512 / AVX2 micro-kernels, picked at run time;
/// about twice matrixmultiply's rate on this project's shapes). Large products are cut into blocks of C rows (or
/// columns, when C is wide) whose number depends on the shape only, computed in parallel on rayon's threads, each
/// by one single-threaded GEMM: every element comes from the same call whatever the thread count, so results do
/// not depend on it.
pub fn matmul(a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], d: MatDims, beta: f32) -> Result<()> {
    use faer::{Accum, MatMut, MatRef};
    let MatDims { m, n, k } = d;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if a.len() < m * k || b.len() < k * n || c.len() < m * n {
        return Err(Error::Internal(format!(
            "matmul {m}×{n}×{k}: operands of {}, {} and {} values are too small",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    let c = &mut c[..m * n];
    // beta = 0 never reads C (it may hold anything, NaN included); other betas scale it first and add.
    let accum = if beta == 0.0 {
        Accum::Replace
    } else {
        if beta != 1.0 {
            c.iter_mut().for_each(|x| *x *= beta);
        }
        Accum::Add
    };
    if k == 0 {
        if beta == 0.0 {
            c.fill(0.0);
        }
        return Ok(());
    }
    // op(a) is m×k: stored k×m when transposed. op(b) is k×n: stored n×k when transposed.
    let a_view = if ta {
        MatRef::from_row_major_slice(&a[..m * k], k, m).transpose()
    } else {
        MatRef::from_row_major_slice(&a[..m * k], m, k)
    };
    let b_view = if tb {
        MatRef::from_row_major_slice(&b[..k * n], n, k).transpose()
    } else {
        MatRef::from_row_major_slice(&b[..k * n], k, n)
    };
    let by_rows = m >= n;
    let len = if by_rows { m } else { n };
    // Blocks of at least 64 rows, at most 16 of them: enough to balance a few threads, few enough that packing the
    // other operand once per block stays small next to the arithmetic.
    let blocks = if m * n * k < (1 << 20) { 1 } else { (len / 64).clamp(1, 16) };
    let step = len.div_ceil(blocks);
    if blocks == 1 {
        gemm_seq(MatMut::from_row_major_slice_mut(c, m, n), accum, a_view, b_view, 1.0f32);
        return Ok(());
    }
    if by_rows {
        c.par_chunks_mut(step * n).enumerate().for_each(|(i, rows)| {
            let lo = i * step;
            let h = rows.len() / n;
            gemm_seq(MatMut::from_row_major_slice_mut(rows, h, n), accum, a_view.subrows(lo, h), b_view, 1.0f32);
        });
    } else {
        // Column blocks of a row-major C are strided: each task gets its own columns through a raw view.
        let c_ptr = SendPtr(c.as_mut_ptr());
        (0..blocks).into_par_iter().for_each(|i| {
            let lo = i * step;
            let w = step.min(n - lo.min(n));
            if w == 0 {
                return;
            }
            let c_ptr = &c_ptr;
            // SAFETY: C holds m·n values (checked above); this view covers rows 0..m and columns lo..lo+w, with
            // row stride n, inside it, and the blocks' column ranges are disjoint, so no two tasks alias.
            let view = unsafe { MatMut::from_raw_parts_mut(c_ptr.0.add(lo), m, w, n as isize, 1) };
            gemm_seq(view, accum, a_view, b_view.subcols(lo, w), 1.0f32);
        });
    }
    Ok(())
}

/// A raw pointer that may cross threads (the caller guarantees disjoint writes).
struct SendPtr(*mut f32);
// SAFETY: used only by `matmul` and `attention`, whose tasks write disjoint parts of their output.
unsafe impl Sync for SendPtr {}

/// One single-threaded faer GEMM, then `vzeroupper`. faer's AVX-512 kernels (private-gemm-x86 0.1.22) return with
/// the upper halves of the vector registers dirty, and every SSE instruction the thread runs afterwards (the
/// elementwise kernels, libm's expf) then waits on them: measured here, a loop of expf ran 50× slower after one such
/// GEMM, and the encoder 7× slower overall. Clearing the state after each call restores full speed.
fn gemm_seq(
    dst: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    alpha: f32,
) {
    faer::linalg::matmul::matmul(dst, accum, a, b, alpha, faer::Par::Seq);
    clear_upper_simd_state();
}

/// `vzeroupper` where AVX exists (a no-op elsewhere): see `gemm_seq`.
#[inline]
pub fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx")]
        unsafe fn zero_upper() {
            std::arch::x86_64::_mm256_zeroupper();
        }
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU has AVX (checked just above), the only requirement of vzeroupper.
            unsafe { zero_upper() };
        }
    }
}

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

/// `x = act(x + bias)` row by row.
pub fn bias_act(x: &mut [f32], bias: &[f32], cols: usize, act: Activation) {
    x.par_chunks_mut(cols.max(1)).for_each(|row| bias_act_row(row, bias, act));
}

/// `grad *= (act > 0)`.
pub fn relu_backward(grad: &mut [f32], act: &[f32]) {
    for (g, &a) in grad.iter_mut().zip(act) {
        if a <= 0.0 {
            *g = 0.0;
        }
    }
}

/// Column sums, rows in order.
pub fn column_sums(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for r in 0..rows {
        for (o, &v) in out.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o += v;
        }
    }
}

/// `e^x` for `x ≤ 0` (softmax arguments), within 2 ulp of `f32::exp` down to −87 and branch-free so that the
/// compiler vectorizes it: `e^x = 2^n · e^r` with `r = x − n·ln 2`, `|r| ≤ ln 2 / 2`, and a degree-6 polynomial for
/// `e^r`. Below −87.3 it returns about 1e-38 instead of 0 (the smallest normal float's neighbourhood).
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
                                     // A comparison, not f32::max, and the exponent from the rounding sum's bits, not a float-to-int cast: both
                                     // keep a loop of this function vectorized. NaN stays NaN.
    let x = if x < -87.3 { -87.3 } else { x };
    let rounded = x * LOG2E + ROUND; // 1.5 · 2^23 + n: n sits in the low bits of the mantissa
    let n = rounded - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let biased = rounded.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    f32::from_bits(biased << 23) * p
}

/// Defines `$name`, which runs `$generic` compiled for AVX-512 or AVX2 + FMA when the CPU has them, else for the
/// baseline target. The source is the same and floating-point contraction stays off, so all give identical results.
macro_rules! multiversion {
    ($vis:vis fn $name:ident / $generic:ident ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports these features, checked just above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $generic($($arg),*)
        }
    };
}

/// `y += a·x` in f64 (the sparse products of PCA).
pub fn axpy_f64(y: &mut [f64], a: f64, x: &[f64]) {
    axpy_f64_dispatch(y, a, x)
}

multiversion!(fn bias_act_row / bias_act_row_generic(row: &mut [f32], bias: &[f32], act: Activation));

/// One row of `bias_act`, a loop per activation so that each vectorizes (the erf's exponential is
/// `exp_nonpositive`, plain arithmetic).
#[inline(always)]
fn bias_act_row_generic(row: &mut [f32], bias: &[f32], act: Activation) {
    let n = row.len().min(bias.len());
    let (row, bias) = (&mut row[..n], &bias[..n]);
    match act {
        Activation::Identity => row.iter_mut().zip(bias).for_each(|(v, &b)| *v += b),
        Activation::Relu => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::Relu)),
        Activation::Gelu => row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::Gelu)),
        Activation::GeluTanh => {
            row.iter_mut().zip(bias).for_each(|(v, &b)| *v = activate(*v + b, Activation::GeluTanh))
        }
    }
}

multiversion!(pub fn csr_rows_times_dense / csr_rows_times_dense_generic(x: &Csr, b: &[f64], k: usize, first: usize, out: &mut [f64]));

/// Rows `first..` of `X·B` (B p×k, row-major) into `out` (overwritten), one k-wide row per row of X (the sparse
/// products of PCA). The dispatch to the vector code happens once per call; each row's outputs are summed in
/// registers, up to 32 columns at a time (see [`row_times_dense`]).
#[inline(always)]
fn csr_rows_times_dense_generic(x: &Csr, b: &[f64], k: usize, first: usize, out: &mut [f64]) {
    for (r, orow) in (first..).zip(out.chunks_exact_mut(k.max(1))) {
        let (idx, val) = x.row(r);
        row_times_dense(idx, val, b, k, orow);
    }
}

/// `out = Σ v·B[j]` over one sparse row's (j, v): up to 32 columns at a time, in multiples of 4, in register
/// accumulators (a sum into memory would chain every non-zero's add through a store and a load), the last k mod 4
/// columns one by one. A block of 12 or 20 columns is one pass over the row, not a pass of 8 or 16 and then one per
/// remaining column. Each output sums the row's non-zeros in their order. `out` is only written, never read: a
/// fresh zeroed allocation's first touch is then a write (reading first mapped the shared zero page, and every
/// write after it cost a copy-on-write fault with a TLB shootdown).
#[inline(always)]
fn row_times_dense(idx: &[u32], val: &[f64], b: &[f64], k: usize, out: &mut [f64]) {
    #[inline(always)]
    fn lanes<const W: usize>(idx: &[u32], val: &[f64], b: &[f64], k: usize, c0: usize, out: &mut [f64]) {
        let mut acc = [0.0f64; W];
        for (&j, &v) in idx.iter().zip(val) {
            let row = &b[j as usize * k + c0..j as usize * k + c0 + W];
            for l in 0..W {
                acc[l] += v * row[l];
            }
        }
        out[c0..c0 + W].copy_from_slice(&acc);
    }
    let mut c0 = 0;
    while k - c0 >= 4 {
        let w = ((k - c0) / 4 * 4).min(32);
        match w {
            4 => lanes::<4>(idx, val, b, k, c0, out),
            8 => lanes::<8>(idx, val, b, k, c0, out),
            12 => lanes::<12>(idx, val, b, k, c0, out),
            16 => lanes::<16>(idx, val, b, k, c0, out),
            20 => lanes::<20>(idx, val, b, k, c0, out),
            24 => lanes::<24>(idx, val, b, k, c0, out),
            28 => lanes::<28>(idx, val, b, k, c0, out),
            _ => lanes::<32>(idx, val, b, k, c0, out),
        }
        c0 += w;
    }
    for c in c0..k {
        let mut acc = 0.0;
        for (&j, &v) in idx.iter().zip(val) {
            acc += v * b[j as usize * k + c];
        }
        out[c] = acc;
    }
}

multiversion!(pub fn csr_rows_gram_dense / csr_rows_gram_dense_generic(x: &Csr, b: &[f64], k: usize, rows: std::ops::Range<usize>, t: &mut [f64], acc: &mut [f64]));

/// Adds `xᵣ(xᵣᵀB)` of the given rows of X to `acc` (p×k): each row's k-wide `xᵣᵀB` into `t`, then scattered back
/// along the row (one pass over X for `XᵀX·B`).
#[inline(always)]
fn csr_rows_gram_dense_generic(
    x: &Csr,
    b: &[f64],
    k: usize,
    rows: std::ops::Range<usize>,
    t: &mut [f64],
    acc: &mut [f64],
) {
    #[inline(always)]
    fn scatter<const W: usize>(x: &Csr, b: &[f64], k: usize, rows: std::ops::Range<usize>, acc: &mut [f64]) {
        let mut t = [0.0f64; W];
        for r in rows {
            let (idx, val) = x.row(r);
            row_times_dense(idx, val, b, W, &mut t);
            for (&j, &v) in idx.iter().zip(val) {
                let row = &mut acc[j as usize * k..j as usize * k + W];
                for l in 0..W {
                    row[l] += v * t[l];
                }
            }
        }
    }
    // The block widths the Lanczos solver uses, with the width known to the compiler; any other width by the
    // general loop.
    match k {
        4 => return scatter::<4>(x, b, k, rows, acc),
        8 => return scatter::<8>(x, b, k, rows, acc),
        12 => return scatter::<12>(x, b, k, rows, acc),
        16 => return scatter::<16>(x, b, k, rows, acc),
        20 => return scatter::<20>(x, b, k, rows, acc),
        24 => return scatter::<24>(x, b, k, rows, acc),
        28 => return scatter::<28>(x, b, k, rows, acc),
        32 => return scatter::<32>(x, b, k, rows, acc),
        _ => {}
    }
    for r in rows {
        let (idx, val) = x.row(r);
        row_times_dense(idx, val, b, k, t);
        for (&j, &v) in idx.iter().zip(val) {
            let row = &mut acc[j as usize * k..(j as usize + 1) * k];
            for (o, &tv) in row.iter_mut().zip(t.iter()) {
                *o += v * tv;
            }
        }
    }
}

multiversion!(fn axpy_f64_dispatch / axpy_f64_generic(y: &mut [f64], a: f64, x: &[f64]));

#[inline(always)]
fn axpy_f64_generic(y: &mut [f64], a: f64, x: &[f64]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}

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
    use faer::{Accum, MatMut, MatRef};
    let MatDims { m: rows, n: v, k } = x.d;
    let OutputLayerOut { logits, losses, w_grad, bias_grad, pre_grad } = out;
    if x.pre.len() < rows * k
        || x.w.len() < k * v
        || x.bias.len() < v
        || x.targets.len() < rows
        || x.targets[..rows].iter().any(|&t| t as usize >= v)
        || logits.len() < rows * v
        || losses.len() < rows
        || w_grad.len() < k * v
        || bias_grad.len() < v
        || pre_grad.len() < rows * k
    {
        return Err(Error::Internal(format!(
            "output_layer_xent {rows}×{v}×{k}: an operand is too small or a target out of range"
        )));
    }
    if rows > 0 && k == 0 {
        return Err(Error::Internal("output_layer_xent: an output layer without inputs".into()));
    }
    let (w_grad, bias_grad, pre_grad) = (&mut w_grad[..k * v], &mut bias_grad[..v], &mut pre_grad[..rows * k]);
    if rows == 0 {
        // No rows (and so no targets to check items against): zero gradients.
        w_grad.fill(0.0);
        bias_grad.fill(0.0);
        return Ok(());
    }
    let targets = &x.targets[..rows];
    let pre = MatRef::from_row_major_slice(&x.pre[..rows * k], rows, k);
    let w = MatRef::from_row_major_slice(&x.w[..k * v], k, v);
    let blocks = v.div_ceil(OUTPUT_BLOCK);
    let span = |b: usize| (b * OUTPUT_BLOCK, OUTPUT_BLOCK.min(v - b * OUTPUT_BLOCK));
    let logits = &mut logits[..rows * v];
    // 1. Logits, block maxima and sums of exponentials.
    let mut stats = vec![BlockStat::default(); blocks * rows];
    logits.par_chunks_mut(rows * OUTPUT_BLOCK).zip(stats.par_chunks_mut(rows)).enumerate().for_each(
        |(b, (block, st))| {
            let (c0, width) = span(b);
            let dst = MatMut::from_row_major_slice_mut(block, rows, width);
            gemm_seq(dst, Accum::Replace, pre, w.subcols(c0, width), 1.0);
            let bias = &x.bias[c0..c0 + width];
            for ((row, s), &t) in block.chunks_exact_mut(width).zip(st.iter_mut()).zip(targets) {
                *s = block_exponentials(row, bias, (t as usize).wrapping_sub(c0));
            }
        },
    );
    // 2. Per row: the loss, and each block's factor from its exponentials to the gradient. The statistics are
    // read block by block (as phase 1 wrote them), every row's sum adding its blocks in block order (f64).
    let mut row_max = vec![f32::NEG_INFINITY; rows];
    for st in stats.chunks_exact(rows) {
        for (m, s) in row_max.iter_mut().zip(st) {
            *m = if s.max > *m { s.max } else { *m };
        }
    }
    let mut sums = vec![0.0f64; rows];
    let mut factors = vec![0f32; blocks * rows];
    for (st, fs) in stats.chunks_exact(rows).zip(factors.chunks_exact_mut(rows)) {
        for (((f, s), &m), sum) in fs.iter_mut().zip(st).zip(&row_max).zip(sums.iter_mut()) {
            *f = exp_nonpositive(s.max - m);
            *sum += s.sum as f64 * *f as f64;
        }
    }
    for (r, (loss, &t)) in losses[..rows].iter_mut().zip(targets).enumerate() {
        let target = stats[t as usize / OUTPUT_BLOCK * rows + r].target;
        *loss = (sums[r].ln() - (target - row_max[r]) as f64) as f32;
    }
    let inv_rows = 1.0 / rows as f64;
    for fs in factors.chunks_exact_mut(rows) {
        for (f, &sum) in fs.iter_mut().zip(&sums) {
            *f = (*f as f64 / sum * inv_rows) as f32;
        }
    }
    // 3. Gradients, group by group: each group's blocks are consecutive, and so are their logits and bias columns.
    let groups = blocks.min(OUTPUT_GROUPS);
    let first_block = |g: usize| g * blocks / groups;
    let mut work = Vec::with_capacity(groups);
    let (mut lg, mut bg) = (&mut logits[..], &mut bias_grad[..]);
    for g in 0..groups {
        let (b0, b1) = (first_block(g), first_block(g + 1));
        let (c0, c1) = (span(b0).0, span(b1 - 1).0 + span(b1 - 1).1);
        let (l, l_rest) = std::mem::take(&mut lg).split_at_mut(rows * (c1 - c0));
        let (bb, b_rest) = std::mem::take(&mut bg).split_at_mut(c1 - c0);
        (lg, bg) = (l_rest, b_rest);
        work.push((b0..b1, l, bb));
    }
    let w_grad_ptr = SendPtr(w_grad.as_mut_ptr());
    let inv_rows = inv_rows as f32;
    let parts: Vec<Vec<f32>> = work
        .into_par_iter()
        .map(|(range, group_logits, group_bias)| {
            let mut part = vec![0f32; rows * k];
            let c_first = span(range.start).0;
            let mut off = 0;
            for b in range {
                let (c0, width) = span(b);
                let block = &mut group_logits[off..off + rows * width];
                off += rows * width;
                let f = &factors[b * rows..(b + 1) * rows];
                block_gradient(block, width, f, targets, c0, inv_rows, &mut group_bias[c0 - c_first..][..width]);
                let g = MatRef::from_row_major_slice(block, rows, width);
                let w_ptr = &w_grad_ptr;
                // SAFETY: `w_grad` holds k × v values (checked above); this view covers rows 0..k and columns
                // c0..c0 + width of it, with row stride v, and the blocks' column ranges are disjoint, so no two
                // tasks write the same value.
                let dw = unsafe { MatMut::from_raw_parts_mut(w_ptr.0.add(c0), k, width, v as isize, 1) };
                gemm_seq(dw, Accum::Replace, pre.transpose(), g, 1.0);
                let dst = MatMut::from_row_major_slice_mut(&mut part, rows, k);
                let accum = if c0 == c_first { Accum::Replace } else { Accum::Add };
                gemm_seq(dst, accum, g, w.subcols(c0, width).transpose(), 1.0);
            }
            part
        })
        .collect();
    pre_grad.copy_from_slice(&parts[0]);
    for part in &parts[1..] {
        axpy_f32(pre_grad, part);
    }
    Ok(())
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

multiversion!(fn axpy_f32 / axpy_f32_generic(y: &mut [f32], x: &[f32]));

#[inline(always)]
fn axpy_f32_generic(y: &mut [f32], x: &[f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += v;
    }
}

/// One Adam step over a flat parameter.
pub fn adam(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    param
        .par_chunks_mut(8192)
        .zip(grad.par_chunks(8192))
        .zip(m.par_chunks_mut(8192))
        .zip(v.par_chunks_mut(8192))
        .for_each(|(((p, g), m), v)| adam_chunk(p, g, m, v, s));
}

multiversion!(fn adam_chunk / adam_chunk_generic(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep));

#[inline(always)]
fn adam_chunk_generic(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    let bc1 = 1.0 - s.beta1.powi(s.t as i32);
    let bc2 = 1.0 - s.beta2.powi(s.t as i32);
    let step = s.lr / bc1;
    let inv_bc2_sqrt = 1.0 / bc2.sqrt();
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i] + s.weight_decay * p[i];
        m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
        v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
        let denom = v[i].sqrt() * inv_bc2_sqrt + s.eps;
        p[i] -= step * m[i] / denom;
    }
}

/// `dst[j][e] = src[idx[j]·stride.0 + e·stride.1]`, `width` values per index.
pub fn gather(src: &[f32], idx: &[u32], width: usize, stride: (usize, usize), dst: &mut [f32]) {
    for (j, &i) in idx.iter().enumerate() {
        let base = i as usize * stride.0;
        for (e, d) in dst[j * width..(j + 1) * width].iter_mut().enumerate() {
            *d = src[base + e * stride.1];
        }
    }
}

/// The sampled softmax cross-entropy of [`crate::backend::Backend::sampled_softmax_xent`], row by row in f32 with
/// the sums of exponentials in f64 (fixed order); the column sums of the gradient added in row order.
#[allow(clippy::too_many_arguments)]
pub fn sampled_softmax_xent(
    logits: &mut [f32],
    rows: usize,
    count: usize,
    bias: &[f32],
    log_q: &[f32],
    shared: &[f32],
    targets: &[u32],
    losses: &mut [f32],
    bias_grad: &mut [f32],
) {
    let scale = 1.0 / rows as f32;
    logits[..rows * count]
        .par_chunks_mut(count.max(1))
        .zip(losses[..rows].par_iter_mut())
        .zip(&targets[..rows])
        .for_each(|((row, loss), &t)| {
            let t = t as usize;
            let active = |j: usize| shared[j] > 0.0 || j == t;
            let mut max = f32::NEG_INFINITY;
            for j in 0..count {
                let z = row[j] + bias[j] - log_q[j];
                row[j] = z;
                if active(j) && z > max {
                    max = z;
                }
            }
            let mut sum = 0.0f64;
            for (j, &z) in row.iter().enumerate() {
                if active(j) {
                    sum += f64::from((z - max).exp());
                }
            }
            let log_sum = sum.ln() as f32;
            *loss = max + log_sum - row[t];
            for (j, z) in row.iter_mut().enumerate() {
                *z = if active(j) {
                    let p = (*z - max - log_sum).exp();
                    (p - if j == t { 1.0 } else { 0.0 }) * scale
                } else {
                    0.0
                };
            }
        });
    column_sums(logits, rows, count, bias_grad);
}

/// Lazy Adam over the selected slices of a parameter (see [`crate::backend::Selected`]).
#[allow(clippy::too_many_arguments)]
pub fn adam_selected(
    param: &mut [f32],
    grad: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    idx: &[u32],
    width: usize,
    param_stride: (usize, usize),
    grad_stride: (usize, usize),
    grad_by_index: bool,
    s: AdamStep,
) {
    let bc1 = 1.0 - s.beta1.powi(s.t as i32);
    let bc2 = 1.0 - s.beta2.powi(s.t as i32);
    let step = s.lr / bc1;
    let inv_bc2_sqrt = 1.0 / bc2.sqrt();
    for (j, &i) in idx.iter().enumerate() {
        let g0 = if grad_by_index { i as usize } else { j };
        for e in 0..width {
            let p = i as usize * param_stride.0 + e * param_stride.1;
            let gi = grad[g0 * grad_stride.0 + e * grad_stride.1] + s.weight_decay * param[p];
            m[p] = s.beta1 * m[p] + (1.0 - s.beta1) * gi;
            v[p] = s.beta2 * v[p] + (1.0 - s.beta2) * gi * gi;
            let denom = v[p].sqrt() * inv_bc2_sqrt + s.eps;
            param[p] -= step * m[p] / denom;
        }
    }
}

/// One SGD step with momentum.
pub fn sgd(param: &mut [f32], grad: &[f32], velocity: &mut [f32], lr: f32, momentum: f32, weight_decay: f32) {
    for i in 0..param.len() {
        let g = grad[i] + weight_decay * param[i];
        velocity[i] = momentum * velocity[i] + g;
        param[i] -= lr * velocity[i];
    }
}

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
    use faer::{Accum, MatMut, MatRef};
    let MatDims { m: rows, n: v, k } = d;
    let masks_ok = mask_offsets.len() > rows
        && mask_offsets[..=rows].windows(2).all(|w| w[0] <= w[1])
        && mask_offsets[rows] as usize <= mask_items.len()
        && mask_items[..mask_offsets[rows] as usize].iter().all(|&i| (i as usize) < v);
    if pre.len() < rows * k
        || w2.len() < k * v
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
    let blocks = v.div_ceil(RANK_BLOCK);
    let span = |b: usize| (b * RANK_BLOCK, RANK_BLOCK.min(v - b * RANK_BLOCK));
    // The block's scores, rows × len, row-major.
    let scores = |b: usize, buf: &mut Vec<f32>| {
        let (b0, len) = span(b);
        buf.resize(rows * len, 0.0);
        let out = &mut buf[..rows * len];
        gemm_seq(MatMut::from_row_major_slice_mut(out, rows, len), Accum::Replace, p, w.subcols(b0, len), 1.0);
        for row in out.chunks_exact_mut(len) {
            for (x, &bi) in row.iter_mut().zip(&bias[b0..b0 + len]) {
                *x += bi;
            }
        }
    };
    // The targets' scores: the diagonal of pre · W2[:, targets], the same k multiply-adds as the target's entry in
    // its block's product (the unit test checks the resulting ranks, ties included, against full logits). Should a
    // kernel ever order them differently and the two differ in the last bit, the target is still excluded by index
    // when its block is counted, so it can never count itself.
    let mut picked = vec![0f32; k * rows];
    for (r, &t) in targets[..rows].iter().enumerate() {
        for c in 0..k {
            picked[c * rows + r] = w[(c, t as usize)];
        }
    }
    let mut diag = vec![0f32; rows * rows];
    let wt = MatRef::from_row_major_slice(&picked, k, rows);
    gemm_seq(MatMut::from_row_major_slice_mut(&mut diag, rows, rows), Accum::Replace, p, wt, 1.0);
    let target_score: Vec<f32> = (0..rows).map(|r| diag[r * rows + r] + bias[targets[r] as usize]).collect();
    let parts: Vec<Vec<RankPart>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            // Each thread keeps its block of scores between calls: a fresh megabyte per task cost its page faults
            // every time (a third of the time at 10^4 items).
            RANK_SCRATCH.with_borrow_mut(|buf| {
                scores(b, buf);
                let (b0, len) = span(b);
                buf[..rows * len]
                    .chunks_exact_mut(len)
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
        })
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

multiversion!(fn exp_shifted_dispatch / exp_shifted(row: &mut [f32]) -> (f32, f32));

multiversion!(fn count_above / count_above_generic(row: &[f32], x: f32) -> usize);

#[inline(always)]
fn count_above_generic(row: &[f32], x: f32) -> usize {
    row.iter().map(|&s| (s > x) as u32).sum::<u32>() as usize
}

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
    if block == 0 || block % TILE_COLS != 0 {
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

// ---- The Transformer encoder's kernels (BERT family): the references of shaders/encoder.wgsl. ----

/// An activation (the `act` code of shaders/elementwise.wgsl).
#[inline(always)]
pub fn activate(v: f32, act: Activation) -> f32 {
    match act {
        Activation::Identity => v,
        Activation::Relu => {
            if v < 0.0 {
                0.0
            } else {
                v
            }
        }
        // BERT's "gelu": x·Φ(x), with the erf of shaders/elementwise.wgsl (Abramowitz & Stegun 7.1.26,
        // |error| < 1.5e-7; libm's f64 erf took a fifth of the encoder's CPU time).
        Activation::Gelu => 0.5 * v * (1.0 + erf_approx(v * std::f32::consts::FRAC_1_SQRT_2)),
        // "gelu_new": the tanh approximation.
        Activation::GeluTanh => {
            let x = f64::from(v);
            (0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())) as f32
        }
    }
}

/// erf(z) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as shaders/elementwise.wgsl computes it.
/// The exponential is `exp_nonpositive` (−z² ≤ 0), so a loop of it vectorizes.
#[inline(always)]
pub fn erf_approx(z: f32) -> f32 {
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp_nonpositive(-a * a)).copysign(z)
}

/// LayerNorm of one row in place (mean and variance summed in f64).
pub fn layernorm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + f64::from(eps)).sqrt();
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = ((f64::from(*v) - mean) * inv) as f32 * g + b;
    }
}

/// `out[r] = LayerNorm(word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]])`, rows of width `cols`.
#[allow(clippy::too_many_arguments)]
pub fn embed_layernorm(
    (word, pos, types): (&[f32], &[f32], &[f32]),
    ids: &[u32],
    type_ids: &[u32],
    seq: usize,
    offset: usize,
    (gamma, beta, eps): (&[f32], &[f32], f32),
    cols: usize,
    out: &mut [f32],
) {
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(r, row)| {
        let (id, ty, t) = (ids[r] as usize, type_ids[r] as usize, r % seq.max(1) + offset);
        for (c, v) in row.iter_mut().enumerate() {
            *v = word[id * cols + c] + pos[t * cols + c] + types[ty * cols + c];
        }
        layernorm_row(row, gamma, beta, eps);
    });
}

/// `x[r] = LayerNorm(x[r] + res[r])` for rows of width `cols`.
pub fn add_layernorm(x: &mut [f32], res: &[f32], cols: usize, (gamma, beta, eps): (&[f32], &[f32], f32)) {
    x.par_chunks_mut(cols.max(1)).zip(res.par_chunks(cols.max(1))).for_each(|(row, r)| {
        for (v, &a) in row.iter_mut().zip(r) {
            *v += a;
        }
        layernorm_row(row, gamma, beta, eps);
    });
}

/// Multi-head self-attention with the padding mask. `qkv` rows (b·seq + t) are [q | k | v], each `heads·head_dim`
/// wide; `out` rows are the heads' weighted sums side by side. Keys past `lens[b]` are masked; scores are scaled by
/// `scale`. Per sequence and head: S = Q·Kᵀ over the real keys (seq × len), a stable softmax per row, O = P·V,
/// both products through [`matmul`] (so results do not depend on the thread count); sequences run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    qkv: &[f32],
    lens: &[u32],
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<()> {
    use faer::{Accum, MatMut, MatRef};
    let h_all = heads * head_dim;
    let width = 3 * h_all;
    if batch == 0 || seq == 0 || h_all == 0 {
        return Ok(());
    }
    if qkv.len() < batch * seq * width || out.len() < batch * seq * h_all || lens.len() < batch {
        return Err(Error::Internal(format!(
            "attention: {} qkv values, {} outputs and {} lengths for {batch} sequences of {seq} × {heads} heads of {head_dim}",
            qkv.len(),
            out.len(),
            lens.len()
        )));
    }
    // One task per (sequence, head): S = Q·Kᵀ over the real keys, softmax by row, O = S·V, read from and written to
    // their strided columns in place (no copies of Q, K, V). Each task is one single-threaded product pair, so the
    // result does not depend on the thread count.
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..batch * heads).into_par_iter().for_each_init(Vec::new, |s, bh| {
        let (b, h) = (bh / heads, bh % heads);
        let len = (lens[b] as usize).min(seq);
        let part = |p: usize, rows: usize| {
            let at = b * seq * width + p * h_all + h * head_dim;
            MatRef::from_row_major_slice_with_stride(
                &qkv[at..at + (rows - 1) * width + head_dim],
                rows,
                head_dim,
                width,
            )
        };
        let out_ptr = &out_ptr;
        // SAFETY: out holds batch·seq·h_all values (checked above); this view is sequence b's rows, head h's columns,
        // with row stride h_all, inside it; the (b, h) tasks' views are disjoint.
        let o = unsafe {
            MatMut::from_raw_parts_mut(out_ptr.0.add(b * seq * h_all + h * head_dim), seq, head_dim, h_all as isize, 1)
        };
        if len == 0 {
            // No real token: nothing to attend to (a batch pads every sequence to at least one token).
            let mut o = o;
            o.fill(0.0);
            return;
        }
        s.resize(seq * len, 0f32);
        let q = part(0, seq);
        let (k, v) = (part(1, len), part(2, len));
        gemm_seq(MatMut::from_row_major_slice_mut(s, seq, len), Accum::Replace, q, k.transpose(), scale);
        s.chunks_mut(len).for_each(softmax_row);
        gemm_seq(o, Accum::Replace, MatRef::from_row_major_slice(s, seq, len), v, 1.0f32);
    });
    Ok(())
}

multiversion!(fn softmax_row / softmax_row_generic(row: &mut [f32]));

/// Softmax of one row of scores in place (see `exp_shifted`).
#[inline(always)]
fn softmax_row_generic(row: &mut [f32]) {
    let (_, sum) = exp_shifted(row);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Replaces each value x of `row` with e^(x − max) and returns (max, Σ e^(x − max)). The maximum and the sum run over
/// 16 fixed lanes (the remainder's sum first, then the lanes in order), so they vectorize and the result does not
/// depend on the CPU's vector width. Shared by both softmaxes.
#[inline(always)]
fn exp_shifted(row: &mut [f32]) -> (f32, f32) {
    const LANES: usize = 16;
    let mut lane_max = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            lane_max[l] = if c[l] > lane_max[l] { c[l] } else { lane_max[l] };
        }
    }
    let mut max = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    max = lane_max.iter().fold(max, |m, &v| if v > m { v } else { m });
    let mut lane_sum = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = exp_nonpositive(c[l] - max);
            c[l] = e;
            lane_sum[l] += e;
        }
    }
    let mut sum = 0.0f32;
    for v in chunks.into_remainder() {
        let e = exp_nonpositive(*v - max);
        *v = e;
        sum += e;
    }
    sum += lane_sum.iter().sum::<f32>();
    (max, sum)
}

/// Pools each sequence's real tokens: `hidden` (batch·seq × cols) into `out` (batch × cols).
pub fn pool(hidden: &[f32], lens: &[u32], seq: usize, cols: usize, mode: PoolMode, out: &mut [f32]) {
    out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(b, o)| {
        let len = lens[b] as usize;
        let token = |t: usize| &hidden[(b * seq + t) * cols..(b * seq + t + 1) * cols];
        match mode {
            PoolMode::Cls => o.copy_from_slice(token(0)),
            PoolMode::Mean => {
                for (c, v) in o.iter_mut().enumerate() {
                    let s: f64 = (0..len).map(|t| f64::from(token(t)[c])).sum();
                    *v = (s / len.max(1) as f64) as f32;
                }
            }
            PoolMode::Max => {
                for (c, v) in o.iter_mut().enumerate() {
                    *v = (0..len).map(|t| token(t)[c]).fold(f32::MIN, f32::max);
                }
            }
        }
    });
}

/// Scales each row of width `cols` to unit l2 norm (as torch.nn.functional.normalize, eps 1e-12).
pub fn l2_normalize(x: &mut [f32], cols: usize) {
    x.par_chunks_mut(cols.max(1)).for_each(|row| {
        let n = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt();
        let inv = 1.0 / n.max(1e-12);
        row.iter_mut().for_each(|v| *v = (f64::from(*v) * inv) as f32);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked held-out ranking equals the unfused path (full logits, bias, `target_ranks`, `softmax_xent`):
    /// the same ranks, masks and ties included, and the same losses to f32 rounding, for both layouts of W2.
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

    #[test]
    fn fast_exp_matches_std_exp() {
        let mut x = 0.0f32;
        while x > -87.0 {
            let (a, b) = (exp_nonpositive(x), x.exp());
            assert!((a - b).abs() <= 3e-7 * b, "exp({x}): {a} vs {b}");
            x -= 0.0137;
        }
        assert!(exp_nonpositive(-1000.0) < 1e-37);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// Blocks of 16 items (many block pairs, both list sides, a partial last block) find the neighbours brute force
    /// finds in f64, and a repeated vector's tie goes to the smaller index.
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
