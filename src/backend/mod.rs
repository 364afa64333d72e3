//! Where the heavy math runs. [`Backend`] is the contract: every operation the stages need, implemented by the CPU
//! backend ([`cpu::Cpu`], the test oracle) and the wgpu backend ([`gpu::Gpu`]). `device::open` picks one for a run.

pub mod cpu;
pub mod cpu_kernels;
pub mod device;
pub mod gpu;

pub use cpu::Cpu;
pub use device::{open, AdapterReport, BackendReport};

use crate::dense::Matrix;
use crate::error::{Error, Result};
use crate::sparse::Csr;

/// The operations the stages run on a backend. Inputs and outputs live on the host for the one-shot linear algebra
/// of PCA; every result is deterministic for a given input (fixed summation order).
pub trait Backend: Send + Sync {
    /// Short name for logs and run.json.
    fn name(&self) -> &'static str;

    /// Kernel timings since the last call, where the backend records them (the GPU with `EMBJOB_GPU_PROFILE=1`).
    fn profile_report(&self) -> Option<String> {
        None
    }

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

    // ---- Resident tensors (f32 values, u32 indices) for training: created once, reused every step. ----

    /// A new f32 tensor holding `data`.
    fn tensor(&self, data: &[f32]) -> Result<Tensor>;
    /// Overwrites the front of a tensor (`data` no longer than it).
    fn write(&self, t: Tensor, data: &[f32]) -> Result<()>;
    /// Copies a tensor back to the host.
    fn read(&self, t: Tensor) -> Result<Vec<f32>>;
    /// A new index buffer with room for `capacity` u32 values.
    fn index_buffer(&self, capacity: usize) -> Result<Indices>;
    /// Fills the front of an index buffer; returns the handle with its new length.
    fn write_indices(&self, t: Indices, data: &[u32]) -> Result<Indices>;
    /// Copies `len` values from `src[src_offset..]` to `dst[dst_offset..]` on the device.
    fn copy(&self, src: Tensor, src_offset: usize, dst: Tensor, dst_offset: usize, len: usize) -> Result<()>;

    // ---- Model operations (f32; every reduction in a fixed order, so results repeat bit for bit). ----

    /// `c = op(a)·op(b) + beta·c` with `op(a)` m×k and `op(b)` k×n, row-major.
    #[allow(clippy::too_many_arguments)]
    fn matmul(&self, a: Tensor, ta: bool, b: Tensor, tb: bool, c: Tensor, dims: MatDims, beta: f32) -> Result<()>;

    /// Gather-and-pool: `out[r] = Σ w_j · table[items[j]]` over the bag `offsets[r]..offsets[r+1]`, divided by the
    /// bag's total weight with mean pooling (its size when every weight is 1). `table` is V×dim, `out` is bags×dim.
    fn embedding_bag(&self, table: Tensor, dim: usize, bags: &Bags, mean: bool, out: Tensor) -> Result<()>;

    /// The embedding gradient as a segment sum over each item's occurrences (no atomics): `grad` (V×dim) is
    /// zeroed, then `grad[item] = Σ d_pooled[example] (/ bag size with mean pooling)`.
    fn embedding_bag_backward(&self, d_pooled: Tensor, dim: usize, bags: &Bags, mean: bool, grad: Tensor)
        -> Result<()>;

    /// In place: `x[r][c] = act(x[r][c] + bias[c])` for an m×n `x`; `relu` picks ReLU, else identity.
    fn bias_act(&self, x: Tensor, bias: Tensor, rows: usize, cols: usize, relu: bool) -> Result<()>;

    /// In place: `grad *= (activation > 0)` (ReLU's backward, from its output).
    fn relu_backward(&self, grad: Tensor, activation: Tensor) -> Result<()>;

    /// `out[c] = Σ_r x[r][c]` (bias gradients).
    fn column_sums(&self, x: Tensor, rows: usize, cols: usize, out: Tensor) -> Result<()>;

    /// Fused softmax cross-entropy, numerically stable, in one pass over each row: replaces `logits` (rows×cols)
    /// with the gradient of the mean loss, `(softmax − onehot(target)) / rows`, and writes each row's loss to
    /// `losses` (rows).
    fn softmax_xent(&self, logits: Tensor, targets: Indices, rows: usize, cols: usize, losses: Tensor) -> Result<()>;

    /// One Adam step (PyTorch's Adam: L2 weight decay added to the gradient, bias-corrected moments).
    fn adam(&self, param: Tensor, grad: Tensor, m: Tensor, v: Tensor, step: AdamStep) -> Result<()>;

    /// One SGD step with momentum (PyTorch's SGD: `v = μv + g + λw; w −= lr·v`).
    fn sgd(
        &self,
        param: Tensor,
        grad: Tensor,
        velocity: Tensor,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) -> Result<()>;

    /// Rank of each row's target among its candidates: `1 + #{j unmasked : s[j] > s[target]}`, where row r masks
    /// `mask_items[mask_offsets[r]..mask_offsets[r+1]]`. Writes ranks (as f32) to `ranks`.
    #[allow(clippy::too_many_arguments)]
    fn target_ranks(
        &self,
        scores: Tensor,
        rows: usize,
        cols: usize,
        targets: Indices,
        mask_items: Indices,
        mask_offsets: Indices,
        ranks: Tensor,
    ) -> Result<()>;

    /// The `k` nearest rows by cosine similarity of every row of `x` (n×dim), itself excluded; ties go to the
    /// smaller index. Returns (neighbour indices, cosines), n×k each, row-major.
    fn cosine_top_k(&self, x: Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)>;
}

/// An f32 tensor resident on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    pub(crate) id: usize,
    pub len: usize,
}

/// A u32 index buffer resident on a backend; `len` is the used length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Indices {
    pub(crate) id: usize,
    pub len: usize,
}

/// Shapes of a matmul: `op(a)` is m×k, `op(b)` is k×n.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// A batch of bags (the input items of each example, with a weight each) and, for the backward pass, the same
/// occurrences grouped by item: `seg_items[s]` occurs in the bags `seg_examples[seg_offsets[s]..seg_offsets[s+1]]`
/// (ascending) with the weights `seg_weights[..]` at the same positions.
#[derive(Debug, Clone, Copy)]
pub struct Bags {
    pub bags: usize,
    pub items: Indices,
    pub offsets: Indices,
    pub weights: Tensor,
    pub seg_weights: Tensor,
    pub seg_items: Indices,
    pub seg_offsets: Indices,
    pub seg_examples: Indices,
}

/// Hyper-parameters of one Adam step.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 for the first step.
    pub t: u32,
}

fn check_dims(op: &str, inner_a: usize, inner_b: usize) -> Result<()> {
    if inner_a == inner_b {
        Ok(())
    } else {
        Err(Error::Internal(format!("{op}: inner dimensions differ ({inner_a} vs {inner_b})")))
    }
}
