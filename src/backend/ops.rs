//! The operations a backend offers, in four families, each implemented by the CPU backend (`cpu/`, the reference)
//! and the wgpu backend (`gpu/`) in a file of the family's name: [`LinalgOps`] (host f64 matrices: PCA's products),
//! [`TensorStore`] (resident tensors), [`ModelOps`] (training and ranking on resident tensors) and [`EncoderOps`]
//! (the Transformer encoder). Every result is deterministic for a given input (fixed summation order).

use super::{
    check_outer, subtract_outer, Activation, AdamStep, AdamWStep, AttentionShape, Bags, Dropout, EmbeddingTables,
    Indices, LayerNorm, MatDims, OutputGrads, OutputLayer, PoolMode, RankMasks, SampledColumns, Selected, SeqShape,
    SgdStep, Tensor, TokenRows,
};
use crate::error::{Error, Result};
use crate::linalg::dense::Matrix;
use crate::linalg::sparse::Csr;

/// Linear algebra on host matrices (inputs and outputs on the host, f64): the one-shot products of PCA.
pub trait LinalgOps {
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

    /// Frees what the backend keeps between the products of one fit (the CPU's `XᵀX·B` accumulators); PCA calls it
    /// when a fit ends. Nothing by default.
    fn release_scratch(&self) {}
}

/// A read-back under way ([`TensorStore::start_read`]): the values themselves, or the device's state of the copy.
pub enum PendingRead {
    Done(Vec<f32>),
    Device(Box<dyn std::any::Any + Send>),
}

/// Resident tensors (f32 values, u32 indices) for training and encoding: created once, reused every step, freed
/// when their last handle is dropped.
pub trait TensorStore {
    /// A new f32 tensor holding `data`.
    fn tensor(&self, data: &[f32]) -> Result<Tensor>;

    /// A new tensor holding `data` rounded to f16 (weights of the f16 path; see [`super::DType::F16`]). Backends
    /// without f16 storage refuse it (the CPU backend computes in f32 only).
    fn tensor_f16(&self, data: &[f32]) -> Result<Tensor> {
        let _ = data;
        Err(crate::error::Error::Internal("this backend stores f32 tensors only".into()))
    }

    /// A new f32 tensor of `len` zeros (at least one value). A backend whose memory is not the host's checks the
    /// size before anything is allocated (the GPU: against the adapter's binding limit, with no host copy).
    fn zeros(&self, len: usize) -> Result<Tensor> {
        self.tensor(&vec![0.0; len.max(1)])
    }

    /// Overwrites the front of a tensor (`data` no longer than it).
    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()>;

    /// Copies a tensor back to the host.
    fn read(&self, t: &Tensor) -> Result<Vec<f32>>;

    /// Starts copying the first `len` values of a tensor back to the host and returns without waiting: what is
    /// recorded afterwards (the next batch) may run on the device before [`Self::finish_read`] waits for the values,
    /// which are the tensor's as of this call. By default (the CPU) the values are read at once.
    fn start_read(&self, t: &Tensor, len: usize) -> Result<PendingRead> {
        let mut v = self.read(t)?;
        if len > v.len() {
            return Err(Error::Internal(format!("a read of {len} values from a tensor of {}", v.len())));
        }
        v.truncate(len);
        Ok(PendingRead::Done(v))
    }

    /// The values of a read started by [`Self::start_read`] on this backend.
    fn finish_read(&self, pending: PendingRead) -> Result<Vec<f32>> {
        match pending {
            PendingRead::Done(v) => Ok(v),
            PendingRead::Device(_) => Err(Error::Internal("a read-back started on another backend".into())),
        }
    }

    /// A new index buffer with room for `capacity` u32 values (none used yet).
    fn index_buffer(&self, capacity: usize) -> Result<Indices>;

    /// Fills the front of an index buffer and sets its used length.
    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()>;

    /// Copies `len` values from `src[src_offset..]` to `dst[dst_offset..]` on the device.
    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()>;
}

/// Model operations on resident tensors (f32; every reduction in a fixed order, so results repeat bit for bit). An
/// output never aliases an input: a backend refuses that as an internal error.
pub trait ModelOps {
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
    /// the CPU backend does it a block of items at a time (`backend::cpu::output_layer_xent`).
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
    /// width 1. An index [`crate::backend::NO_ROW`] writes zeros (rows of padding).
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
}

/// Transformer encoder operations. A batch holds `batch` sequences padded to `seq` tokens: activation row
/// b·seq + t is token t of sequence b; `lens` holds each sequence's real length.
pub trait EncoderOps {
    /// `out[r] = LayerNorm(word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]])` for every token row.
    fn embed_layernorm(&self, tables: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()>;

    /// A dense layer: `out = act(x·wᵀ + bias)` for `dims.m` rows of `x` (m×k) and a Linear layer's weights `w`
    /// (n×k, f32 or, on the f16 path, f16), as [`ModelOps::matmul_bias_act`] computes it, except that each row of
    /// `out` depends on its row of `x` alone, bit for bit: kernels and summation order are chosen by n and k only,
    /// never by the number of rows or threads. A document's vector thus does not depend on its batch (its
    /// neighbours, its padding, the batch size), which the contextual cache relies on.
    #[allow(clippy::too_many_arguments)]
    fn linear(&self, x: &Tensor, w: &Tensor, out: &Tensor, dims: MatDims, bias: &Tensor, act: Activation)
        -> Result<()>;

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

/// The encoder's backward pass and its optimizer (fine-tuning): the forward ops that keep what the backward pass
/// reads, each op's gradient, and AdamW. Shapes as in [`EncoderOps`]; gradients are of a scalar loss.
pub trait EncoderGradOps {
    /// `out[r] = word[ids[r]] + pos[r % seq + offset] + types[type_ids[r]]`: the embeddings' sum before their
    /// LayerNorm (`tables.ln` is not used).
    fn embed_sum(&self, tables: &EmbeddingTables<'_>, tokens: &TokenRows<'_>, out: &Tensor) -> Result<()>;

    /// `pre[r] += residual[r]` (when given), then `out[r] = LayerNorm(pre[r])`: the sum the backward pass needs
    /// stays in `pre`.
    fn layernorm_keep(
        &self,
        pre: &Tensor,
        residual: Option<&Tensor>,
        rows: usize,
        ln: &LayerNorm<'_>,
        out: &Tensor,
    ) -> Result<()>;

    /// LayerNorm's backward from its input `pre` and the output's gradient `dy`: `dx` (rows × width) and
    /// `dy_xhat = dy ⊙ x̂` (rows × width; its column sums are γ's gradient, those of `dy` β's).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        pre: &Tensor,
        dy: &Tensor,
        rows: usize,
        ln: &LayerNorm<'_>,
        dx: &Tensor,
        dy_xhat: &Tensor,
    ) -> Result<()>;

    /// `out[i] = act(pre[i])` for the first `len` values.
    fn activation(&self, pre: &Tensor, out: &Tensor, len: usize, act: Activation) -> Result<()>;

    /// In place: `grad[i] *= act'(pre[i])` for the first `len` values.
    fn activation_backward(&self, pre: &Tensor, grad: &Tensor, len: usize, act: Activation) -> Result<()>;

    /// [`EncoderOps::attention`]'s backward: from `qkv` and the output's gradient `d_out`, the gradient of `qkv`
    /// (rows [dq | dk | dv]). Scores are recomputed, never stored: `stats` (rows × heads × 2: each query's
    /// log-sum-exp and Σ P·dP) is all that passes between the queries' pass and the keys' pass.
    fn attention_backward(
        &self,
        qkv: &Tensor,
        lens: &Indices,
        shape: AttentionShape,
        d_out: &Tensor,
        d_qkv: &Tensor,
        stats: &Tensor,
    ) -> Result<()>;

    /// [`EncoderOps::pool`]'s backward (mean and first token; max pooling is not trained): `d_hidden` (batch·seq ×
    /// cols) from `d_pooled` (batch × cols), zero on padding rows.
    fn pool_backward(
        &self,
        d_pooled: &Tensor,
        lens: &Indices,
        shape: SeqShape,
        mode: PoolMode,
        d_hidden: &Tensor,
    ) -> Result<()>;

    /// [`EncoderOps::l2_normalize`]'s backward from its input `x`: `dx = (dy − y·(y·dy)) / ‖x‖`, `y = x / ‖x‖`.
    fn l2_normalize_backward(&self, x: &Tensor, dy: &Tensor, rows: usize, cols: usize, dx: &Tensor) -> Result<()>;

    /// In place: `x[i] *= alpha` for the first `len` values.
    fn scale(&self, x: &Tensor, len: usize, alpha: f32) -> Result<()>;

    /// In place: `x[i] *= d.factor(i)` for the first `len` values. Dropout in training, and its backward (the
    /// gradient through the same mask is the same product).
    fn dropout(&self, x: &Tensor, len: usize, d: Dropout) -> Result<()>;

    /// Σ x[i]² over the first `len` values, on the host in f64 (the GPU sums blocks of 4,096 values in f32).
    fn sum_squares(&self, x: &Tensor, len: usize) -> Result<f64>;

    /// One AdamW step (PyTorch's `AdamW`: decoupled weight decay, bias-corrected moments), the gradient scaled by
    /// `step.grad_scale` first (gradient clipping).
    fn adamw(&self, param: &Tensor, grad: &Tensor, m: &Tensor, v: &Tensor, step: AdamWStep) -> Result<()>;
}
