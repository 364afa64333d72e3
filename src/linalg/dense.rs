//! A dense row-major f64 matrix on the host: what the backends take and return for the PCA operations.
//!
//! The fields are private and every constructor checks that the buffer holds `rows × cols` values, so safe code
//! cannot build a `Matrix` whose buffer is shorter than its shape (the CPU backend hands its pointer and strides to
//! `matrixmultiply`).

use crate::error::{Error, Result};

/// The error of a shape whose number of values overflows.
fn too_large(rows: usize, cols: usize) -> Error {
    Error::Internal(format!("a {rows}×{cols} matrix has more values than memory can address"))
}

/// `rows × cols`, row-major; `data.len() == rows * cols` always.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// All zeros; an error when `rows × cols` overflows (the shape is checked before anything is allocated, so
    /// no `Matrix` ever has a buffer shorter than its shape).
    pub fn zeros(rows: usize, cols: usize) -> Result<Matrix> {
        let len = rows.checked_mul(cols).ok_or_else(|| too_large(rows, cols))?;
        Ok(Matrix { rows, cols, data: vec![0.0; len] })
    }

    /// From row-major values; an error unless `data.len()` is `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f64>) -> Result<Matrix> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::Internal(format!(
                "a {rows}×{cols} matrix needs {} values, not {}",
                rows.saturating_mul(cols),
                data.len()
            )));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// From a function of (row, column); an error when `rows × cols` overflows.
    pub fn from_fn(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f64) -> Result<Matrix> {
        let len = rows.checked_mul(cols).ok_or_else(|| too_large(rows, cols))?;
        let mut data = Vec::with_capacity(len);
        for r in 0..rows {
            data.extend((0..cols).map(|c| f(r, c)));
        }
        Ok(Matrix { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The row-major values.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The row-major values, to change in place (the shape stays).
    pub fn data_mut(&mut self) -> &mut [f64] {
        &mut self.data
    }

    /// The row-major values, taken.
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    /// Element `(r, c)`.
    #[inline]
    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &[f64] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Subtracts `mean[c]` from every value of column c.
    pub fn centre_columns(&mut self, mean: &[f64]) {
        for row in self.data.chunks_mut(self.cols.max(1)) {
            for (x, m) in row.iter_mut().zip(mean) {
                *x -= m;
            }
        }
    }

    /// The transpose.
    pub fn transpose(&self) -> Matrix {
        // The same number of values as `self` holds: no product to check.
        let mut out = Matrix { rows: self.cols, cols: self.rows, data: vec![0.0; self.data.len()] };
        for r in 0..self.rows {
            for c in 0..self.cols {
                out.data[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        out
    }

    /// To a faer matrix (for the dense decompositions).
    pub fn to_faer(&self) -> faer::Mat<f64> {
        faer::MatRef::from_row_major_slice(&self.data, self.rows, self.cols).to_owned()
    }

    /// From a faer matrix view.
    pub fn from_faer(m: faer::MatRef<'_, f64>) -> Matrix {
        // A faer matrix holds nrows × ncols values: the product fits.
        let mut out = Matrix { rows: m.nrows(), cols: m.ncols(), data: vec![0.0; m.nrows() * m.ncols()] };
        faer::MatMut::from_row_major_slice_mut(&mut out.data, m.nrows(), m.ncols()).copy_from(m);
        out
    }
}

/// `vzeroupper` where AVX exists (a no-op elsewhere). faer's AVX-512 kernels return with the upper halves of the
/// vector registers dirty, and every SSE instruction the thread runs afterwards waits on them (measured: a loop of
/// expf 50× slower after one GEMM): call it after each faer call (the CPU backend's GEMMs, PCA's decompositions).
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
