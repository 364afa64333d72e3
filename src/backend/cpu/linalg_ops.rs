//! [`LinalgOps`] on the CPU: dense f64 products through `matrixmultiply`, sparse ones row-parallel with rayon,
//! summing in a fixed order.

use rayon::prelude::*;

use super::holds;
use crate::backend::ops::*;
use crate::backend::{check_dims, check_outer, subtract_outer};
use crate::error::{Error, Result};
use crate::linalg::dense::Matrix;
use crate::linalg::sparse::Csr;

impl LinalgOps for super::Cpu {
    fn release_scratch(&self) {
        release_gram_scratch();
    }

    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols(), a.rows()) } else { (a.rows(), a.cols()) };
        let (k2, n) = if tb { (b.cols(), b.rows()) } else { (b.rows(), b.cols()) };
        check_dims("gemm", k, k2)?;
        let mut c = Matrix::zeros(m, n)?;
        // Row-major strides; a transpose is the same buffer with its strides swapped.
        let (rsa, csa) = if ta { (1, a.cols() as isize) } else { (a.cols() as isize, 1) };
        let (rsb, csb) = if tb { (1, b.cols() as isize) } else { (b.cols() as isize, 1) };
        if !holds(a.data().len(), &[m, k]) || !holds(b.data().len(), &[k, n]) || !holds(c.data().len(), &[m, n]) {
            return Err(Error::Internal("gemm: an operand's buffer does not hold its shape".into()));
        }
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: the pointers and strides describe the m×k, k×n and m×n matrices held by `a`, `b` and `c`.
            // A `Matrix` always holds rows × cols values (private fields, constructors that refuse a shape whose
            // product overflows: src/linalg/dense.rs), the inner dimensions are checked above and `c` was made m×n
            // here; the lengths are checked once more, with checked arithmetic.
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.data().as_ptr(),
                    rsa,
                    csa,
                    b.data().as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    c.data_mut().as_mut_ptr(),
                    n as isize,
                    1,
                );
            }
        }
        Ok(c)
    }

    fn gram_csr(&self, x: &Csr) -> Result<Matrix> {
        // Each thread owns a block of output rows a and scans every input row for entries in its block: no
        // shared writes, and each output sums over input rows in row order.
        let p = x.cols;
        let mut out = Matrix::zeros(p, p)?;
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
        out.data_mut().par_chunks_mut(block * p).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                for i in start..idx.len() {
                    let a = idx[i] as usize;
                    if a >= hi {
                        break;
                    }
                    let va = val[i];
                    let row = &mut chunk[(a - lo) * p..(a - lo + 1) * p];
                    for (&b, &vb) in idx.iter().zip(val) {
                        row[b as usize] += va * vb;
                    }
                }
            }
        });
        Ok(out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        // Row i scattered into a dense vector, then gathered against every row j ≤ i; mirrored afterwards.
        let n = x.rows;
        let mut out = Matrix::zeros(n, n)?;
        out.data_mut().par_chunks_mut(n.max(1)).enumerate().for_each_init(
            || vec![0.0f64; x.cols],
            |dense, (i, row)| {
                let (ia, va) = x.row(i);
                for (&c, &v) in ia.iter().zip(va) {
                    dense[c as usize] = v;
                }
                for (j, slot) in row.iter_mut().enumerate().take(i + 1) {
                    let (ib, vb) = x.row(j);
                    *slot = ib.iter().zip(vb).map(|(&c, &v)| dense[c as usize] * v).sum();
                }
                for &c in ia {
                    dense[c as usize] = 0.0;
                }
            },
        );
        for i in 0..n {
            for j in i + 1..n {
                out.data_mut()[i * n + j] = out.data()[j * n + i];
            }
        }
        Ok(out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        check_dims("csr_mul", x.cols, b.rows())?;
        csr_times_dense(x, b)
    }

    fn csr_mul_minus_outer(&self, x: &Csr, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Result<Matrix> {
        check_dims("csr_mul_minus_outer", x.cols, b.rows())?;
        check_outer(x.rows, b.cols(), a, s)?;
        csr_times_dense_minus_outer(x, b, a, s)
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        check_dims("csr_t_mul", x.rows, b.rows())?;
        // Each thread owns a block of output rows (columns of X) and scans every row of X for entries in its
        // block: no transpose, no shared writes, and every output sums over X's rows in order.
        let (p, k) = (x.cols, b.cols());
        let mut out = Matrix::zeros(p, k)?;
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 2).max(1);
        out.data_mut().par_chunks_mut((block * k).max(1)).enumerate().for_each(|(bi, chunk)| {
            let lo = bi * block;
            let hi = (lo + block).min(p);
            for r in 0..x.rows {
                let (idx, val) = x.row(r);
                let start = idx.partition_point(|&c| (c as usize) < lo);
                let brow = b.row(r);
                for (&c, &v) in idx[start..].iter().zip(&val[start..]) {
                    let c = c as usize;
                    if c >= hi {
                        break;
                    }
                    super::simd::axpy_f64(&mut chunk[(c - lo) * k..(c - lo + 1) * k], v, brow);
                }
            }
        });
        Ok(out)
    }

    fn csr_gram_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        check_dims("csr_gram_mul", x.cols, b.rows())?;
        csr_gram_times_dense(x, b)
    }
}

fn csr_times_dense(x: &Csr, b: &Matrix) -> Result<Matrix> {
    csr_rows_in_blocks(x, b, |_, _| {})
}

/// `X·B − a·sᵀ`: each block of rows takes the term off while it is still in cache.
fn csr_times_dense_minus_outer(x: &Csr, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Result<Matrix> {
    csr_rows_in_blocks(x, b, |first, rows| subtract_outer(rows, first, a, s))
}

/// `X·B` in blocks of 256 rows on every core, `then(first row, block)` applied to each block after its product.
fn csr_rows_in_blocks(x: &Csr, b: &Matrix, then: impl Fn(usize, &mut [f64]) + Sync) -> Result<Matrix> {
    let k = b.cols();
    let mut out = Matrix::zeros(x.rows, k)?;
    const ROWS: usize = 256;
    out.data_mut().par_chunks_mut((ROWS * k).max(1)).enumerate().for_each(|(c, rows)| {
        super::sparse::csr_rows_times_dense(x, b.data(), k, c * ROWS, rows);
        then(c * ROWS, rows);
    });
    Ok(out)
}

/// Accumulators of [`csr_gram_times_dense`], kept between the calls of one PCA fit (a fresh multi-megabyte
/// allocation per product cost page faults and TLB shootdowns: a fifth of the time on 500,000 × 20,000).
static GRAM_SCRATCH: std::sync::Mutex<Vec<f64>> = std::sync::Mutex::new(Vec::new());

/// Frees the accumulators kept for `XᵀX·B`.
fn release_gram_scratch() {
    if let Ok(mut s) = GRAM_SCRATCH.lock() {
        *s = Vec::new();
    }
}

/// `XᵀX·B` in one pass over X: each row's `xᵣᵀB` (k wide), scattered straight back along the row. The rows are cut
/// into chunks of equal non-zeros, each with its own p×k accumulator, summed in chunk order; their number depends
/// on the shape only (at most 4, and under 256 MB of accumulators), so the result does not depend on the threads.
fn csr_gram_times_dense(x: &Csr, b: &Matrix) -> Result<Matrix> {
    let (p, k) = (x.cols, b.cols());
    let size = (p * k).max(1);
    let chunks = ((256usize << 20) / (size * 8)).clamp(1, 4).min(x.rows.max(1));
    let mut bounds: Vec<usize> =
        (0..=chunks).map(|c| x.indptr.partition_point(|&e| e < x.nnz() * c / chunks).min(x.rows)).collect();
    bounds[chunks] = x.rows;
    let mut guard = GRAM_SCRATCH.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    guard.resize(chunks * size, 0.0);
    guard.par_chunks_mut(size).take(chunks).enumerate().for_each(|(c, acc)| {
        acc.fill(0.0);
        let mut t = vec![0.0; k];
        super::sparse::csr_rows_gram_dense(x, b.data(), k, bounds[c]..bounds[c + 1].max(bounds[c]), &mut t, acc);
    });
    let mut out = guard[..size].to_vec();
    for part in guard[size..chunks * size].chunks(size) {
        out.iter_mut().zip(part).for_each(|(o, v)| *o += v);
    }
    out.truncate(p * k);
    Matrix::from_vec(p, k, out)
}
