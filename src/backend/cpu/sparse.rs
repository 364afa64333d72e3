//! The row kernels of the sparse products of PCA (f64): `X·B` and `XᵀX·B` a block of rows at a time.

use super::simd::*;
use crate::linalg::sparse::Csr;

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
