//! Compressed sparse row matrices.

/// A CSR matrix: row `r` holds `indices[indptr[r]..indptr[r+1]]` (ascending columns) with their `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub rows: usize,
    pub cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f64>,
}

impl Csr {
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Column indices and values of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f64]) {
        let span = self.indptr[r]..self.indptr[r + 1];
        (&self.indices[span.clone()], &self.values[span])
    }

    /// The given rows, in the given order.
    pub fn select_rows(&self, rows: &[usize]) -> Csr {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let (mut indices, mut values) = (Vec::new(), Vec::new());
        for &r in rows {
            let (i, v) = self.row(r);
            indices.extend_from_slice(i);
            values.extend_from_slice(v);
            indptr.push(indices.len());
        }
        Csr { rows: rows.len(), cols: self.cols, indptr, indices, values }
    }

    /// A CSR matrix from rows of `(column, value)` pairs; columns must ascend within a row and lie below `cols`.
    pub fn from_rows(cols: usize, rows: &[Vec<(u32, f64)>]) -> Csr {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let nnz = rows.iter().map(Vec::len).sum();
        let mut indices = Vec::with_capacity(nnz);
        let mut values = Vec::with_capacity(nnz);
        for row in rows {
            debug_assert!(row.windows(2).all(|w| w[0].0 < w[1].0), "columns must ascend");
            for &(c, v) in row {
                debug_assert!((c as usize) < cols);
                indices.push(c);
                values.push(v);
            }
            indptr.push(indices.len());
        }
        Csr { rows: rows.len(), cols, indptr, indices, values }
    }

    /// The dense row-major copy (tests and small inputs only).
    pub fn to_dense(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.rows * self.cols];
        for r in 0..self.rows {
            let (idx, val) = self.row(r);
            for (&c, &v) in idx.iter().zip(val) {
                out[r * self.cols + c as usize] = v;
            }
        }
        out
    }

    /// Sum of each column.
    pub fn column_sums(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.cols];
        for (&c, &v) in self.indices.iter().zip(&self.values) {
            out[c as usize] += v;
        }
        out
    }
}

impl Csr {
    /// The CSR form of the transpose (a CSC view), columns ascending within each row.
    pub fn transpose(&self) -> Csr {
        let x = self;
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
}
