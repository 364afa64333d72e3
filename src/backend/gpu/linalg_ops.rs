//! [`LinalgOps`] on the GPU: PCA's products run in f32 on the device (f64 on the host before and after), each a
//! one-shot upload, dispatch and read-back.

use super::kernels::Kernel;
use super::params::SparseParams;
use super::pipelines::groups_1d;
use super::recorder::{f32s, f64_matrix, Gpu};
use super::{GpuBuf, GpuIdx};
use crate::backend::ops::LinalgOps;
use crate::backend::{check_dims, MatDims};
use crate::error::Result;
use crate::linalg::dense::Matrix;
use crate::linalg::sparse::Csr;

/// A CSR matrix on the device: indptr, indices, values.
type GpuCsr = (GpuIdx, GpuIdx, GpuBuf);

impl LinalgOps for Gpu {
    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix> {
        let (m, k) = if ta { (a.cols(), a.rows()) } else { (a.rows(), a.cols()) };
        let (k2, n) = if tb { (b.cols(), b.rows()) } else { (b.rows(), b.cols()) };
        check_dims("gemm", k, k2)?;
        let (ga, gb) = (self.ctx().upload(&f32s(a))?, self.ctx().upload(&f32s(b))?);
        let d = MatDims { m, n, k };
        let kernel = self.ctx().kernel_for(d);
        let out = self.one_shot(m.saturating_mul(n), "gemm output", |enc, c| {
            self.ctx().gemm(kernel, enc, (&ga, ta), (&gb, tb), c, d, 0.0, None)
        })?;
        f64_matrix(m, n, out)
    }

    fn gram_csr(&self, x: &Csr) -> Result<Matrix> {
        // XᵀX = (Xᵀ)(Xᵀ)ᵀ: the row products of the transpose.
        let c = self.upload_csr(&x.transpose())?;
        let p = x.cols;
        let out =
            self.one_shot(p.saturating_mul(p), "covariance (XᵀX)", |enc, o| self.outer(enc, p, x.rows, &c, o))?;
        f64_matrix(p, p, out)
    }

    fn outer_csr(&self, x: &Csr) -> Result<Matrix> {
        let c = self.upload_csr(x)?;
        let n = x.rows;
        let out =
            self.one_shot(n.saturating_mul(n), "Gram matrix (XXᵀ)", |enc, o| self.outer(enc, n, x.cols, &c, o))?;
        f64_matrix(n, n, out)
    }

    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        check_dims("csr_mul", x.cols, b.rows())?;
        let c = self.upload_csr(x)?;
        let gb = self.ctx().upload(&f32s(b))?;
        let k = b.cols();
        let out = self.one_shot(x.rows.saturating_mul(k), "sparse product", |enc, o| {
            let p = SparseParams { rows: x.rows as u32, cols: x.cols as u32, k: k as u32, pad0: 0 };
            let entries = [(1, c.0.buffer()), (2, c.1.buffer()), (3, c.2.buffer()), (4, gb.buffer()), (5, o.buffer())];
            self.ctx().dispatch(enc, Kernel::CsrMul, 0, &p, &entries, groups_1d(x.rows * k))
        })?;
        f64_matrix(x.rows, k, out)
    }

    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        self.csr_mul(&x.transpose(), b)
    }
}

impl Gpu {
    /// `out = X·Xᵀ` (rows×rows) for a CSR `X` on the device.
    fn outer(&self, enc: &mut wgpu::CommandEncoder, rows: usize, cols: usize, c: &GpuCsr, out: &GpuBuf) -> Result<()> {
        let p = SparseParams { rows: rows as u32, cols: cols as u32, k: 0, pad0: 0 };
        let entries = [(1, c.0.buffer()), (2, c.1.buffer()), (3, c.2.buffer()), (5, out.buffer())];
        self.ctx().dispatch(enc, Kernel::CsrOuter, 0, &p, &entries, groups_1d(rows * rows))
    }
}
