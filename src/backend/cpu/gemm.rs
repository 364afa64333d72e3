//! `c = op(a)·op(b) + beta·c` in f32 through faer's GEMM: the CPU twin of shaders/gemm*.wgsl.

use rayon::prelude::*;

use super::holds;
use crate::backend::MatDims;
use crate::error::{Error, Result};

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
    if !holds(a.len(), &[m, k]) || !holds(b.len(), &[k, n]) || !holds(c.len(), &[m, n]) {
        return Err(Error::Internal(format!(
            "matmul {m}×{n}×{k}: operands of {}, {} and {} values are too small (or the shape overflows)",
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
            // SAFETY: C holds m·n values (its length checked above with checked arithmetic, then sliced to m·n);
            // this view covers rows 0..m and columns lo..lo+w, with row stride n, inside it, and the blocks'
            // column ranges are disjoint, so no two tasks alias.
            let view = unsafe { MatMut::from_raw_parts_mut(c_ptr.0.add(lo), m, w, n as isize, 1) };
            gemm_seq(view, accum, a_view, b_view.subcols(lo, w), 1.0f32);
        });
    }
    Ok(())
}

/// Rows per block of [`matmul_rows_invariant`]: every block is one faer product of exactly this many rows.
const INVARIANT_ROWS: usize = 256;

/// `c = a·bᵀ` (a m×k, b n×k as a Linear layer stores it, c m×n) with each row of C a function of its row of A
/// alone, bit for bit, whatever m and the thread count: rows go through faer in blocks of exactly
/// [`INVARIANT_ROWS`] (the last one padded with zero rows in a scratch copy), so every block is the same product
/// shape with the same kernels and summation order, and the blocks run on any threads.
pub fn matmul_rows_invariant(a: &[f32], b: &[f32], c: &mut [f32], d: MatDims) -> Result<()> {
    use faer::{Accum, MatMut, MatRef};
    let MatDims { m, n, k } = d;
    if !holds(a.len(), &[m, k]) || !holds(b.len(), &[n, k]) || !holds(c.len(), &[m, n]) {
        return Err(Error::Internal(format!(
            "linear {m}×{n}×{k}: operands of {}, {} and {} values are too small (or the shape overflows)",
            a.len(),
            b.len(),
            c.len()
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let b_view = MatRef::from_row_major_slice(&b[..n * k], n, k).transpose();
    c[..m * n].par_chunks_mut(INVARIANT_ROWS * n).enumerate().for_each(|(i, out)| {
        let lo = i * INVARIANT_ROWS;
        let rows = out.len() / n;
        let block = |x: &[f32], out: &mut [f32]| {
            let x = MatRef::from_row_major_slice(x, INVARIANT_ROWS, k);
            gemm_seq(MatMut::from_row_major_slice_mut(out, INVARIANT_ROWS, n), Accum::Replace, x, b_view, 1.0f32);
        };
        if rows == INVARIANT_ROWS {
            block(&a[lo * k..(lo + rows) * k], out);
        } else {
            let mut x = vec![0f32; INVARIANT_ROWS * k];
            x[..rows * k].copy_from_slice(&a[lo * k..(lo + rows) * k]);
            let mut y = vec![0f32; INVARIANT_ROWS * n];
            block(&x, &mut y);
            out.copy_from_slice(&y[..rows * n]);
        }
    });
    Ok(())
}

/// The f16 path's product, as its GPU kernels compute it (shaders/gemm_f16.wgsl, gemm_coop.wgsl): [`matmul`] of A
/// and B rounded to f16 (round to nearest even), so every product of two values is exact and the sums run in f32.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f16_inputs(a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], d: MatDims, beta: f32) -> Result<()> {
    let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect::<Vec<f32>>();
    matmul(&round(a), ta, &round(b), tb, c, d, beta)
}

/// A raw pointer that may cross threads (the caller guarantees disjoint writes).
pub(super) struct SendPtr(pub(super) *mut f32);

// SAFETY: a `SendPtr` is made only by `matmul`, `attention` and the output layer's gradients (this module's
// siblings), each over an output whose length they checked, and their tasks write disjoint parts of it.
unsafe impl Sync for SendPtr {}

/// One single-threaded faer GEMM, then `vzeroupper`. faer's AVX-512 kernels (private-gemm-x86 0.1.22) return with
/// the upper halves of the vector registers dirty, and every SSE instruction the thread runs afterwards (the
/// elementwise kernels, libm's expf) then waits on them: measured here, a loop of expf ran 50× slower after one such
/// GEMM, and the encoder 7× slower overall. Clearing the state after each call restores full speed.
pub(super) fn gemm_seq(
    dst: faer::MatMut<'_, f32>,
    accum: faer::Accum,
    a: faer::MatRef<'_, f32>,
    b: faer::MatRef<'_, f32>,
    alpha: f32,
) {
    faer::linalg::matmul::matmul(dst, accum, a, b, alpha, faer::Par::Seq);
    crate::linalg::dense::clear_upper_simd_state();
}
