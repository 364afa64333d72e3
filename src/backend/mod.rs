//! Where the heavy math runs. [`Backend`] is the contract: every operation the stages need, implemented by the CPU
//! backend ([`cpu::Cpu`], the test oracle) and, in a later build, by the wgpu backend. `device` picks the backend for
//! a run.

pub mod cpu;
pub mod device;

pub use cpu::Cpu;
pub use device::{select, AdapterReport, BackendReport};

use crate::dense::Matrix;
use crate::error::{Error, Result};
use crate::sparse::Csr;

/// The operations the stages run on a backend. Inputs and outputs live on the host for the one-shot linear algebra
/// of PCA; every result is deterministic for a given input (fixed summation order).
pub trait Backend: Send + Sync {
    /// Short name for logs and run.json.
    fn name(&self) -> &'static str;

    /// `op(A)·op(B)`, where `op` transposes when its flag is set.
    fn gemm(&self, a: &Matrix, ta: bool, b: &Matrix, tb: bool) -> Result<Matrix>;

    /// `XᵀX` of a dense matrix (p×p).
    fn gram_dense(&self, x: &Matrix) -> Result<Matrix> {
        self.gemm(x, true, x, false)
    }

    /// `XᵀX` of a sparse matrix (p×p, dense), without densifying `X`.
    fn gram_csr(&self, x: &Csr) -> Result<Matrix>;

    /// `XXᵀ` of a sparse matrix (n×n, dense).
    fn outer_csr(&self, x: &Csr) -> Result<Matrix>;

    /// `X·B` for sparse `X` (n×p) and dense `B` (p×k).
    fn csr_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix>;

    /// `Xᵀ·B` for sparse `X` (n×p) and dense `B` (n×k).
    fn csr_t_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix>;
}

fn check_dims(op: &str, inner_a: usize, inner_b: usize) -> Result<()> {
    if inner_a == inner_b {
        Ok(())
    } else {
        Err(Error::Internal(format!("{op}: inner dimensions differ ({inner_a} vs {inner_b})")))
    }
}
