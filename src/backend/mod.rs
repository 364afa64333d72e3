//! Where the heavy math runs. [`Backend`] is the contract: every operation the stages need, implemented by the CPU
//! backend ([`cpu::Cpu`], the test oracle) and the wgpu backend ([`gpu::Gpu`]). `device::open` picks one for a run.

pub mod cpu;
pub mod cpu_kernels;
pub mod device;
pub mod gpu;

pub use cpu::Cpu;
pub use device::{open, AdapterReport, BackendChoice, BackendKind, BackendReport};

use std::any::Any;
use std::sync::Arc;

use crate::linalg::dense::Matrix;
use crate::error::{Error, Result};
use crate::linalg::sparse::Csr;

/// The longest sequence [`Backend::attention`] takes, on every backend (the GPU kernel holds a query's scores for
/// up to this many keys in workgroup memory); the plan bounds `contextual.max_tokens` by it.
pub const MAX_SEQ: usize = 512;

/// The operations the stages run on a backend. Inputs and outputs live on the host for the one-shot linear algebra
/// of PCA; every result is deterministic for a given input (fixed summation order).
pub trait Backend: Send + Sync {
    /// Which backend this is (logs and run.json).
    fn kind(&self) -> BackendKind;

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

    /// `X·B − a·sᵀ` for sparse `X` (n×p), dense `B` (p×k), `a` (n values; `None`: all ones) and `s` (k values): a
    /// sparse product with a rank-one term taken off, as PCA's implicit centring needs it. This default runs
    /// csr_mul and then the subtraction; the CPU takes the term off each block of rows while it is in cache.
    fn csr_mul_minus_outer(&self, x: &Csr, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Result<Matrix> {
        check_outer(x.rows, b.cols(), a, s)?;
        let mut y = self.csr_mul(x, b)?;
        subtract_outer(y.data_mut(), 0, a, s);
        Ok(y)
    }

    /// `XᵀX·B` for sparse `X` (n×p) and dense `B` (p×k): PCA's Lanczos solver on the feature side. Two sparse
    /// products by default; the CPU fuses them into one pass over `X`.
    fn csr_gram_mul(&self, x: &Csr, b: &Matrix) -> Result<Matrix> {
        let y = self.csr_mul(x, b)?;
        self.csr_t_mul(x, &y)
    }

    // ---- Resident tensors (f32 values, u32 indices) for training: created once, reused every step, freed when
    // their last handle is dropped. ----

    /// A new f32 tensor holding `data`.
    fn tensor(&self, data: &[f32]) -> Result<Tensor>;
    /// Overwrites the front of a tensor (`data` no longer than it).
    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()>;
    /// Copies a tensor back to the host.
    fn read(&self, t: &Tensor) -> Result<Vec<f32>>;
    /// A new index buffer with room for `capacity` u32 values (none used yet).
    fn index_buffer(&self, capacity: usize) -> Result<Indices>;
    /// Fills the front of an index buffer and sets its used length.
    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()>;
    /// Copies `len` values from `src[src_offset..]` to `dst[dst_offset..]` on the device.
    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()>;

    // ---- Model operations (f32; every reduction in a fixed order, so results repeat bit for bit). An output
    // never aliases an input: a backend refuses that as an internal error. ----

    /// `c = op(a)·op(b) + beta·c` with `op(a)` m×k and `op(b)` k×n, row-major.
    #[allow(clippy::too_many_arguments)]
    fn matmul(&self, a: &Tensor, ta: bool, b: &Tensor, tb: bool, c: &Tensor, dims: MatDims, beta: f32) -> Result<()>;

    /// Gather-and-pool: `out[r] = Σ w_j · table[items[j]]` over the bag `offsets[r]..offsets[r+1]`, divided by the
    /// bag's total weight with mean pooling (its size when every weight is 1). `table` is V×dim, `out` is bags×dim.
    fn embedding_bag(&self, table: &Tensor, dim: usize, bags: &Bags<'_>, mean: bool, out: &Tensor) -> Result<()>;

    /// The embedding gradient as a segment sum over each item's occurrences (no atomics):
    /// `grad[item] = Σ d_pooled[example] (/ bag size with mean pooling)` for the batch's items; every other row of
    /// `grad` (V×dim) is zeroed when `zero_others` (dense optimizers), left as it is otherwise (an optimizer that
    /// reads only the batch's rows: `adam_selected`).
    fn embedding_bag_backward(
        &self,
        d_pooled: &Tensor,
        dim: usize,
        bags: &Bags<'_>,
        mean: bool,
        grad: &Tensor,
        zero_others: bool,
    ) -> Result<()>;

    /// A dense layer: `c = act(op(a)·op(b) + bias)`, the bias (n values) added to every row. This default (the
    /// CPU's) is matmul and bias_act; the GPU adds the bias and applies the activation in the GEMM's write-back
    /// (shaders/gemm_epilogue.wgsl), so they take no pass of their own over `c`.
    #[allow(clippy::too_many_arguments)]
    fn matmul_bias_act(
        &self,
        a: &Tensor,
        ta: bool,
        b: &Tensor,
        tb: bool,
        c: &Tensor,
        dims: MatDims,
        bias: &Tensor,
        act: Activation,
    ) -> Result<()> {
        self.matmul(a, ta, b, tb, c, dims, 0.0)?;
        self.bias_act(c, bias, dims.m, dims.n, act)
    }

    /// In place: `x[r][c] = act(x[r][c] + bias[c])` for an m×n `x`.
    fn bias_act(&self, x: &Tensor, bias: &Tensor, rows: usize, cols: usize, act: Activation) -> Result<()>;

    /// In place: `grad *= (activation > 0)` (ReLU's backward, from its output).
    fn relu_backward(&self, grad: &Tensor, activation: &Tensor) -> Result<()>;

    /// `out[c] = Σ_r x[r][c]` (bias gradients).
    fn column_sums(&self, x: &Tensor, rows: usize, cols: usize, out: &Tensor) -> Result<()>;

    /// Fused softmax cross-entropy, numerically stable, in one pass over each row: replaces `logits` (rows×cols)
    /// with the gradient of the mean loss, `(softmax − onehot(target)) / rows`, and writes each row's loss to
    /// `losses` (rows).
    fn softmax_xent(&self, logits: &Tensor, targets: &Indices, rows: usize, cols: usize, losses: &Tensor)
        -> Result<()>;

    /// The full-softmax output layer of a training step, forward and backward: the logits `pre·W + bias` (see
    /// [`OutputLayer`]), each row's softmax cross-entropy loss against its target, and the gradients of the mean loss
    /// for W, the bias and `pre` (see [`OutputGrads`]). This default (the GPU's) runs matmul_bias_act,
    /// softmax_xent, column_sums (the bias gradient) and the two gradient products over the whole logits matrix;
    /// the CPU backend does it a block of items at a time (`cpu_kernels::output_layer_xent`).
    fn output_layer_xent(&self, layer: &OutputLayer<'_>, grads: &OutputGrads<'_>) -> Result<()> {
        let OutputLayer { pre, weight, bias, targets, dims } = *layer;
        let MatDims { m: rows, n: items, k } = dims;
        self.matmul_bias_act(pre, false, weight, false, grads.logits, dims, bias, Activation::Identity)?;
        self.softmax_xent(grads.logits, targets, rows, items, grads.losses)?;
        self.column_sums(grads.logits, rows, items, grads.bias)?;
        self.matmul(pre, true, grads.logits, false, grads.weight, MatDims { m: k, n: items, k: rows }, 0.0)?;
        self.matmul(grads.logits, false, weight, true, grads.pre, MatDims { m: rows, n: k, k: items }, 0.0)
    }

    /// Held-out ranking over all items: for each of the `d.m` rows, the scores `pre·W2 + bias` of all `d.n` items
    /// (W2 `d.k` × `d.n`, or `d.n` × `d.k` when `item_major`), its target's rank as [`Backend::target_ranks`]
    /// counts it (written to `ranks`) and its softmax cross-entropy loss (to `losses`). This default (the GPU's)
    /// computes the scores into `logits` (rows × items) and runs target_ranks and softmax_xent on them; the CPU
    /// backend scores the items a block at a time and does not touch `logits`.
    #[allow(clippy::too_many_arguments)]
    fn rank_and_loss(
        &self,
        pre: &Tensor,
        w2: &Tensor,
        item_major: bool,
        bias: &Tensor,
        d: MatDims,
        masks: &RankMasks<'_>,
        logits: &Tensor,
        ranks: &Tensor,
        losses: &Tensor,
    ) -> Result<()> {
        self.matmul_bias_act(pre, false, w2, item_major, logits, d, bias, Activation::Identity)?;
        self.target_ranks(logits, d.m, d.n, masks, ranks)?;
        self.softmax_xent(logits, masks.targets, d.m, d.n, losses)
    }

    /// `dst[j][e] = src[idx[j]·stride.0 + e·stride.1]` for e < `width`: slices of `src` picked by `idx`, in `idx`
    /// order, into `dst` (idx.len()×width, row-major). Rows of a row-major matrix: stride (width, 1); single values:
    /// width 1.
    fn gather(&self, src: &Tensor, idx: &Indices, width: usize, stride: (usize, usize), dst: &Tensor) -> Result<()>;

    /// Sampled softmax cross-entropy (see [`SampledColumns`]): for each row r, over its active columns (the shared
    /// negatives and its own target), `z = logits + bias − log_q`; writes the row's loss `logsumexp(z) − z[target]`
    /// to `losses`, replaces `logits` (rows×count) with the gradient of the mean loss (`(softmax − onehot) / rows`
    /// on active columns, 0 elsewhere) and writes its column sums (rows in order) to `bias_grad` (count).
    fn sampled_softmax_xent(
        &self,
        logits: &Tensor,
        rows: usize,
        columns: &SampledColumns<'_>,
        losses: &Tensor,
        bias_grad: &Tensor,
    ) -> Result<()>;

    /// Adam (as [`Backend::adam`], the same step counter) on the selected parts of a parameter only: the lazy Adam
    /// of sparse updates, whose untouched entries keep their value and moments (see [`Selected`]).
    fn adam_selected(
        &self,
        param: &Tensor,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        sel: &Selected<'_>,
        step: AdamStep,
    ) -> Result<()>;

    /// One Adam step (PyTorch's Adam: L2 weight decay added to the gradient, bias-corrected moments).
    fn adam(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, step: AdamStep) -> Result<()>;

    /// One SGD step with momentum (PyTorch's SGD: `v = μv + g + λw; w −= lr·v`).
    fn sgd(&self, param: &Tensor, grad: &Tensor, velocity: &Tensor, step: SgdStep) -> Result<()>;

    /// Rank of each row's target among its candidates: `1 + #{j unmasked : s[j] > s[target]}`, where row r masks
    /// `mask_items[mask_offsets[r]..mask_offsets[r+1]]`. Writes ranks (as f32) to `ranks`.
    fn target_ranks(
        &self,
        scores: &Tensor,
        rows: usize,
        cols: usize,
        masks: &RankMasks<'_>,
        ranks: &Tensor,
    ) -> Result<()>;

    /// The `k` nearest rows by cosine similarity of every row of `x` (n×dim), itself excluded; ties go to the
    /// smaller index. Returns (neighbour indices, cosines), n×k each, row-major.
    fn cosine_top_k(&self, x: &Tensor, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)>;

    // ---- Transformer encoder operations. A batch holds `batch` sequences padded to `seq` tokens: activation
    // row b·seq + t is token t of sequence b; `lens` holds each sequence's real length. ----

    /// `out[r] = LayerNorm(word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]])` for every token row.
    fn embed_layernorm(&self, tables: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()>;

    /// In place: `x[r] = LayerNorm(x[r] + residual[r])` for `rows` rows of the LayerNorm's width.
    fn add_layernorm(&self, x: &Tensor, residual: &Tensor, rows: usize, ln: &LayerNorm<'_>) -> Result<()>;

    /// Multi-head self-attention with the padding mask: `qkv` rows are [q | k | v] (3·heads·head_dim wide), `out`
    /// rows the heads' attention-weighted values side by side; keys past a sequence's length are masked.
    fn attention(&self, qkv: &Tensor, lens: &Indices, shape: AttentionShape, out: &Tensor) -> Result<()>;

    /// Pools each sequence's real tokens of `hidden` (batch·seq × cols) into `out` (batch × cols).
    fn pool(&self, hidden: &Tensor, lens: &Indices, shape: SeqShape, mode: PoolMode, out: &Tensor) -> Result<()>;

    /// In place: scales each row of `x` (rows × cols) to unit l2 norm.
    fn l2_normalize(&self, x: &Tensor, rows: usize, cols: usize) -> Result<()>;
}

/// Checks that a rank-one term `a·sᵀ` has the shape of an n×k product (`a` `None`: all ones).
pub fn check_outer(n: usize, k: usize, a: Option<&[f64]>, s: &[f64]) -> Result<()> {
    if a.is_some_and(|a| a.len() != n) || s.len() != k {
        return Err(Error::Internal(format!(
            "a rank-one term of {} × {} values for a {n} × {k} product",
            a.map_or(n, <[f64]>::len),
            s.len()
        )));
    }
    Ok(())
}

/// `y[r] −= a[first + r]·s` for the rows of a row-major block (`s.len()` wide) that starts at row `first`; `a`
/// `None` stands for all ones.
pub fn subtract_outer(y: &mut [f64], first: usize, a: Option<&[f64]>, s: &[f64]) {
    for (r, row) in y.chunks_exact_mut(s.len().max(1)).enumerate() {
        let f = a.map_or(1.0, |a| a[first + r]);
        row.iter_mut().zip(s).for_each(|(v, s)| *v -= f * s);
    }
}

/// An elementwise activation after a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    /// x·Φ(x) with the exact erf (BERT's `gelu`).
    Gelu,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// The `act` code of shaders/elementwise.wgsl.
    pub fn code(self) -> u32 {
        match self {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Gelu => 2,
            Activation::GeluTanh => 3,
        }
    }
}

/// How a sequence's token vectors become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// The mean over the real tokens (padding excluded).
    Mean,
    /// The first token ([CLS]).
    Cls,
    /// The element-wise maximum over the real tokens.
    Max,
}

impl PoolMode {
    /// The `mode` code of shaders/encoder.wgsl's `pool`.
    pub fn code(self) -> u32 {
        match self {
            PoolMode::Mean => 0,
            PoolMode::Cls => 1,
            PoolMode::Max => 2,
        }
    }
}

/// A LayerNorm's parameters.
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm<'a> {
    pub gamma: &'a Tensor,
    pub beta: &'a Tensor,
    pub eps: f32,
}

/// The embedding tables of an encoder (rows of width `cols`) and the LayerNorm after their sum.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingTables<'a> {
    pub word: &'a Tensor,
    pub position: &'a Tensor,
    pub token_type: &'a Tensor,
    pub ln: LayerNorm<'a>,
    pub cols: usize,
    /// Added to a token's index for its position row (RoBERTa: padding index + 1; BERT: 0).
    pub position_offset: usize,
}

/// The token rows of a batch: ids and token types, `seq` per sequence.
#[derive(Debug, Clone, Copy)]
pub struct TokenRows<'a> {
    pub ids: &'a Indices,
    pub type_ids: &'a Indices,
    pub seq: usize,
}

/// A batch of sequences: `batch` sequences of `seq` (padded) tokens, `cols` wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqShape {
    pub batch: usize,
    pub seq: usize,
    pub cols: usize,
}

/// A batch's attention: `heads` heads of `head_dim`, scores scaled by `scale` (1/√head_dim).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
}

/// Storage a backend keeps behind a handle: its own type, shared by the handle's clones, freed with the last one.
type Storage = Arc<dyn Any + Send + Sync>;

/// An f32 tensor resident on a backend. Clones share the storage; it is freed when the last handle is dropped.
#[derive(Clone)]
pub struct Tensor {
    len: usize,
    storage: Storage,
}

/// A u32 index buffer resident on a backend, with room for `capacity` values of which `len` are in use.
pub struct Indices {
    len: usize,
    capacity: usize,
    storage: Storage,
}

impl Tensor {
    /// A handle over a backend's storage for `len` values.
    pub(crate) fn new<S: Any + Send + Sync>(len: usize, storage: S) -> Tensor {
        Tensor { len, storage: Arc::new(storage) }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backend's storage, or an error when the tensor belongs to another backend.
    pub(crate) fn storage<S: Any>(&self, backend: &str) -> Result<&S> {
        self.storage
            .downcast_ref()
            .ok_or_else(|| Error::Internal(format!("{backend} backend: a tensor of another backend")))
    }

    /// Whether two handles share one storage.
    pub fn same(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
}

impl Indices {
    pub(crate) fn new<S: Any + Send + Sync>(capacity: usize, storage: S) -> Indices {
        Indices { len: 0, capacity, storage: Arc::new(storage) }
    }

    /// The values in use.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn set_len(&mut self, len: usize) {
        self.len = len;
    }

    pub(crate) fn storage<S: Any>(&self, backend: &str) -> Result<&S> {
        self.storage
            .downcast_ref()
            .ok_or_else(|| Error::Internal(format!("{backend} backend: an index buffer of another backend")))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} values)", self.len)
    }
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices({} of {})", self.len, self.capacity)
    }
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
pub struct Bags<'a> {
    pub bags: usize,
    pub items: &'a Indices,
    pub offsets: &'a Indices,
    pub weights: &'a Tensor,
    pub seg_weights: &'a Tensor,
    pub seg_items: &'a Indices,
    pub seg_offsets: &'a Indices,
    pub seg_examples: &'a Indices,
}

/// The operands of [`Backend::output_layer_xent`]: `pre` (`dims.m` rows × `dims.k`), the weight W (`dims.k` ×
/// `dims.n` items, row-major), the bias (items) and each row's target item.
#[derive(Debug, Clone, Copy)]
pub struct OutputLayer<'a> {
    pub pre: &'a Tensor,
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub targets: &'a Indices,
    pub dims: MatDims,
}

/// The results of [`Backend::output_layer_xent`]: each row's loss (`losses`), the gradients of the mean loss for
/// the weight (k × items), the bias (items) and `pre` (rows × k), and `logits`, a rows × items workspace whose
/// contents afterwards are unspecified.
#[derive(Debug, Clone, Copy)]
pub struct OutputGrads<'a> {
    pub logits: &'a Tensor,
    pub losses: &'a Tensor,
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub pre: &'a Tensor,
}

/// The targets of a batch's rows and the items each row masks from its ranking.
#[derive(Debug, Clone, Copy)]
pub struct RankMasks<'a> {
    pub targets: &'a Indices,
    pub mask_items: &'a Indices,
    pub mask_offsets: &'a Indices,
}

/// The candidate columns of a sampled softmax batch: `count` columns (distinct items), each with its gathered
/// output bias, its log-Q correction (the log of its probability of being among the sampled negatives), and whether
/// it is a sampled negative, active in every row (1) or only a row's own target (0); `targets[r]` is the column of
/// row r's target.
#[derive(Debug, Clone, Copy)]
pub struct SampledColumns<'a> {
    pub count: usize,
    pub bias: &'a Tensor,
    pub log_q: &'a Tensor,
    pub shared: &'a Tensor,
    pub targets: &'a Indices,
}

impl SampledColumns<'_> {
    /// Checks the lengths of a sampled softmax's operands for `rows` rows (an internal error when one is short).
    pub fn check_lengths(&self, rows: usize, logits: &Tensor, losses: &Tensor, bias_grad: &Tensor) -> Result<()> {
        let n = self.count;
        let short = logits.len() < rows * n
            || losses.len() < rows
            || bias_grad.len() < n
            || self.bias.len() < n
            || self.log_q.len() < n
            || self.shared.len() < n
            || self.targets.len() < rows;
        if short {
            return Err(Error::Internal("sampled_softmax_xent: an operand shorter than its shape".into()));
        }
        Ok(())
    }
}

/// The parts of a parameter a lazy optimizer step touches: `idx.len()` slices of `width` values. Slice j, element
/// e is the parameter's value `idx[j]·param_stride.0 + e·param_stride.1` and the gradient's value
/// `g·grad_stride.0 + e·grad_stride.1`, with g = `idx[j]` when `grad_by_index` (a full-size gradient) and j
/// otherwise (a compact one, slice by slice). `idx` holds distinct values.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    pub idx: &'a Indices,
    pub width: usize,
    pub param_stride: (usize, usize),
    pub grad_stride: (usize, usize),
    pub grad_by_index: bool,
}

/// Hyper-parameters of one Adam step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 for the first step.
    pub t: u32,
}

/// Hyper-parameters of one SGD step.
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
}

/// Refuses an operation whose outputs alias each other or an input: the CPU would wait on its own write lock, the
/// kernels read and write in one pass.
pub(crate) fn check_distinct(backend: BackendKind, outputs: &[&Tensor], inputs: &[&Tensor]) -> Result<()> {
    for (i, o) in outputs.iter().enumerate() {
        if outputs[i + 1..].iter().chain(inputs).any(|t| o.same(t)) {
            return Err(Error::Internal(format!("{backend} backend: an output tensor is also an operand")));
        }
    }
    Ok(())
}

fn check_dims(op: &str, inner_a: usize, inner_b: usize) -> Result<()> {
    if inner_a == inner_b {
        Ok(())
    } else {
        Err(Error::Internal(format!("{op}: inner dimensions differ ({inner_a} vs {inner_b})")))
    }
}
