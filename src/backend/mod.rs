//! Where the heavy math runs. [`Backend`] is the contract: every operation the stages need, implemented by the CPU
//! backend ([`cpu::Cpu`], the test oracle) and the wgpu backend ([`gpu::Gpu`]). `device::open` picks one for a run.

pub mod cpu;
pub mod device;
pub mod dropout;
pub mod gpu;
pub mod ops;

pub use cpu::Cpu;
pub use device::{open, AdapterReport, BackendChoice, BackendKind, BackendReport};
pub use dropout::Dropout;
pub use ops::{EncoderGradOps, EncoderOps, LinalgOps, ModelOps, TensorStore};

use std::any::Any;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The longest sequence [`Backend::attention`] takes, on every backend (the GPU kernel holds a query's scores for
/// up to this many keys in workgroup memory); the plan bounds `contextual.max_tokens` by it.
pub const MAX_SEQ: usize = 512;

/// The index that [`ModelOps::gather`] turns into a row of zeros (the rows of padding around packed tokens).
pub const NO_ROW: u32 = u32::MAX;

/// A backend: every operation family, and what it is. The stages and algorithms take `&dyn Backend`; the families
/// are separate traits so that each backend implements each family in a file of its own (see [`ops`]). Bring the
/// families into scope with `use crate::backend::ops::*`.
pub trait Backend: LinalgOps + TensorStore + ModelOps + EncoderOps + EncoderGradOps + Send + Sync {
    /// Which backend this is (logs and run.json).
    fn kind(&self) -> BackendKind;

    /// Whether products can take f16 weights here (the encoder's f16 path), and on what.
    fn f16_support(&self) -> Result<F16Support> {
        Ok(F16Support::None("the CPU backend computes in f32".into()))
    }

    /// Kernel timings since the last call, where the backend records them (the GPU with `EMBJOB_GPU_PROFILE=1`).
    fn profile_report(&self) -> Option<String> {
        None
    }
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

/// A batch's attention: `heads` heads of `head_dim`, scores scaled by `scale` (1/√head_dim), and in training the
/// dropout of the attention probabilities (the value of query i, key j of sequence b, head h has index
/// ((b·heads + h)·seq + i)·seq + j).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub dropout: Option<Dropout>,
}

/// Storage a backend keeps behind a handle: its own type, shared by the handle's clones, freed with the last one.
type Storage = Arc<dyn Any + Send + Sync>;

/// Whether a backend's products take f16 weights ([`ops::TensorStore::tensor_f16`]), and on what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum F16Support {
    /// On tensor cores (the adapter's name).
    TensorCores(String),
    /// With f16 kernels but no tensor cores (why none).
    Kernels(String),
    /// Not at all (why not).
    None(String),
}

/// How a tensor's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    /// IEEE half precision: weights of the f16 path (`TensorStore::tensor_f16`), taken only as the B operand of a
    /// product (`ModelOps::matmul`, `ModelOps::matmul_bias_act`); every other operation refuses them.
    F16,
}

/// A tensor resident on a backend (f32 values, or f16 ones: see [`DType`]). Clones share the storage; it is freed
/// when the last handle is dropped.
#[derive(Clone)]
pub struct Tensor {
    len: usize,
    dtype: DType,
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
        Tensor { len, dtype: DType::F32, storage: Arc::new(storage) }
    }

    /// A handle over a backend's storage for `len` values of `dtype`.
    pub(crate) fn typed<S: Any + Send + Sync>(len: usize, dtype: DType, storage: S) -> Tensor {
        Tensor { len, dtype, storage: Arc::new(storage) }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
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
        write!(f, "Tensor({} {:?} values)", self.len, self.dtype)
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

/// One AdamW step (PyTorch's `AdamW`): `p ← p·(1 − lr·weight_decay)`, then Adam's update of the moments of
/// `g = grad · grad_scale` and `p ← p − lr / (1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + eps)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 for the first step.
    pub t: u32,
    /// The gradient's factor (gradient clipping: `max_norm / (‖g‖ + 1e-6)` when that is below 1).
    pub grad_scale: f32,
}

impl AdamWStep {
    /// `lr / (1 − β1ᵗ)` and `√(1 − β2ᵗ)`, in f64 as PyTorch's Python scalars, then rounded.
    pub fn corrections(&self) -> (f32, f32) {
        let t = i32::try_from(self.t).unwrap_or(i32::MAX);
        let bc1 = 1.0 - f64::from(self.beta1).powi(t);
        let bc2 = 1.0 - f64::from(self.beta2).powi(t);
        ((f64::from(self.lr) / bc1) as f32, bc2.sqrt() as f32)
    }
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
