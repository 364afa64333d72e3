//! The CPU backend: the reference every other backend is tested against, and what runs where no GPU exists.
//! Dense products go through `matrixmultiply`; sparse products are row-parallel with rayon and sum in a fixed order,
//! so results do not depend on the thread count.

use rayon::prelude::*;

use super::Backend;
use crate::dense::Matrix;
use crate::error::Result;
use crate::sparse::Csr;

/// The CPU backend.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu;

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols, a.rows) } else { (a.rows, a.cols) };
        let (k2, n) = if tb { (b.cols, b.rows) } else { (b.rows, b.cols) };
        super::check_dims("gemm", k, k2)?;
        let mut c = Matrix::zeros(m, n);
        // Row-major strides; a transpose is the same buffer with its strides swapped.
        let (rsa, csa) = if ta { (1, a.cols as isize) } else { (a.cols as isize, 1) };
        let (rsb, csb) = if tb { (1, b.cols as isize) } else { (b.cols as isize, 1) };
        if m > 0 && n > 0 && k > 0 {
            // SAFETY: the pointers and strides describe the m×k, k×n and m×n matrices held by `a`, `b` and `c`,
            // whose buffers have exactly those sizes (checked above and by construction of `c`).
            unsafe {
                matrixmultiply::dgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.data.as_ptr(),
                    rsa,
                    csa,
                    b.data.as_ptr(),
                    rsb,
                    csb,
                    0.0,
                    c.data.as_mut_ptr(),
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
        let mut out = Matrix::zeros(p, p);
        let block = p.div_ceil(rayon::current_num_threads().max(1) * 4).max(1);
        out.data.par_chunks_mut(block * p).enumerate().for_each(|(bi, chunk)| {
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
        let n = x.rows;
        let mut out = Matrix::zeros(n, n);
        out.data.par_chunks_mut(n.max(1)).enumerate().for_each(|(i, row)| {
            let (ia, va) = x.row(i);
            for (j, slot) in row.iter_mut().enumerate() {
                let (ib, vb) = x.row(j);
                *slot = sparse_dot(ia, va, ib, vb);
            }
        });
        Ok(out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_mul", x.cols, b.rows)?;
        Ok(csr_times_dense(x, b))
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        super::check_dims("csr_t_mul", x.rows, b.rows)?;
        Ok(csr_times_dense(&transpose(x), b))
    }
}

/// Dot product of two sparse rows with ascending indices.
fn sparse_dot(ia: &[u32], va: &[f64], ib: &[u32], vb: &[f64]) -> f64 {
    let (mut i, mut j, mut s) = (0, 0, 0.0);
    while i < ia.len() && j < ib.len() {
        match ia[i].cmp(&ib[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += va[i] * vb[j];
                i += 1;
                j += 1;
            }
        }
    }
    s
}

fn csr_times_dense(x: &Csr, b: &Matrix) -> Matrix {
    let k = b.cols;
    let mut out = Matrix::zeros(x.rows, k);
    out.data.par_chunks_mut(k.max(1)).enumerate().for_each(|(r, row)| {
        let (idx, val) = x.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            for (o, &bv) in row.iter_mut().zip(b.row(c as usize)) {
                *o += v * bv;
            }
        }
    });
    out
}

/// The CSR form of the transpose (a CSC view of `x`), columns ascending within each row.
pub fn transpose(x: &Csr) -> Csr {
    let mut counts = vec![0usize; x.cols + 1];
    for &c in &x.indices {
        counts[c as usize + 1] += 1;
    }
    for i in 0..x.cols {
        counts[i + 1] += counts[i];
    }
    let indptr = counts.clone();
    let mut next = counts;
    let mut indices = vec![0u32; x.nnz()];
    let mut values = vec![0.0; x.nnz()];
    for r in 0..x.rows {
        let (idx, val) = x.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            let at = next[c as usize];
            indices[at] = r as u32;
            values[at] = v;
            next[c as usize] += 1;
        }
    }
    Csr { rows: x.cols, cols: x.rows, indptr, indices, values }
}
