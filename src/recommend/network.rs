//! The embedding-layer model of the ML Crash Course food example, trained on any [`Backend`]:
//!
//! ```text
//! input items ─▶ embedding bag (V×d, sum or mean) ─▶ hidden (d×n + b, ReLU) ─▶ logits (n×V + b) ─▶ softmax CE
//! ```
//!
//! Parameters, optimizer state and activations are backend tensors created once; per step only the batch's indices
//! go up. Initialisation follows the PyTorch peer: embedding rows U(−1/√V, 1/√V) (or N(0,1)), linear layers
//! U(−1/√fan_in, 1/√fan_in) for weights and biases.

use serde::{Deserialize, Serialize};

use crate::backend::{
    Activation, AdamStep, Backend, Bags, Indices, MatDims, OutputGrads, OutputLayer, RankMasks, SampledColumns,
    Selected, SgdStep, Tensor,
};
use crate::error::{Error, Result};
use crate::linalg::rng::SplitMix;
use crate::recommend::sampling::{AliasTable, Candidates};
use crate::recommend::split::Example;
use crate::runtime::memory::{item, Item};

/// How the input items' embedding rows combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Sum,
    #[default]
    Mean,
}

/// Optimizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    #[default]
    Adam,
    Sgd,
}

/// Initialisation of the embedding table (hidden and output layers use PyTorch's nn.Linear default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingInit {
    /// U(−1/√V, 1/√V): what a bias-free nn.Linear(V, d) on the multi-hot vector gets.
    #[default]
    Linear,
    /// N(0, 1), nn.EmbeddingBag's default.
    Normal,
}

/// Sizes of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// V: items (inputs and outputs).
    pub items: usize,
    /// d: embedding width.
    pub dim: usize,
    /// n: hidden units (0 = none).
    pub hidden: usize,
    pub pooling: Pooling,
}

impl Shape {
    /// Width of the layer that feeds the logits.
    pub fn pre_logits(&self) -> usize {
        if self.hidden > 0 {
            self.hidden
        } else {
            self.dim
        }
    }
}

/// Parameters as host vectors (row-major): `emb` V×d, `w1` d×n, `b1` n, `w2` pre×V, `b2` V.
#[derive(Debug, Clone, PartialEq)]
pub struct HostParams {
    pub emb: Vec<f32>,
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl HostParams {
    /// Seeded initialisation.
    pub fn init(shape: Shape, init: EmbeddingInit, seed: u64) -> HostParams {
        let mut rng = SplitMix::new(seed);
        let mut uniform = |len: usize, bound: f64| -> Vec<f32> {
            (0..len).map(|_| ((rng.next_f64() * 2.0 - 1.0) * bound) as f32).collect()
        };
        let Shape { items: v, dim: d, hidden: n, .. } = shape;
        let emb = match init {
            EmbeddingInit::Linear => uniform(v * d, 1.0 / (v as f64).sqrt()),
            EmbeddingInit::Normal => {
                let mut r = SplitMix::new(seed ^ 0x6e6f_726d);
                (0..v * d).map(|_| r.normal() as f32).collect()
            }
        };
        let (w1, b1) = if n > 0 {
            let bound = 1.0 / (d as f64).sqrt();
            (uniform(d * n, bound), uniform(n, bound))
        } else {
            (Vec::new(), Vec::new())
        };
        let pre = shape.pre_logits();
        let bound = 1.0 / (pre as f64).sqrt();
        let w2 = uniform(pre * v, bound);
        let b2 = uniform(v, bound);
        HostParams { emb, w1, b1, w2, b2 }
    }

    /// All parameters in a fixed order (emb, w1, b1, w2, b2).
    pub fn parts(&self) -> [&Vec<f32>; 5] {
        [&self.emb, &self.w1, &self.b1, &self.w2, &self.b2]
    }
}

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
}

/// One resident parameter with its gradient and optimizer state.
struct Param {
    value: Tensor,
    grad: Tensor,
    state: OptimizerState,
}

/// What an optimizer keeps per parameter.
enum OptimizerState {
    /// Adam's first and second moments.
    Adam { m: Tensor, v: Tensor },
    /// SGD's momentum buffer.
    Sgd { velocity: Tensor },
}

/// The network on a backend: parameters, optimizer state and the workspace for batches up to `capacity`.
pub struct Network<'b> {
    be: &'b dyn Backend,
    pub shape: Shape,
    capacity: usize,
    max_items: usize,
    params: Vec<Param>,
    pooled: Tensor,
    hidden: Tensor,
    logits: Tensor,
    losses: Tensor,
    d_hidden: Tensor,
    d_pooled: Tensor,
    ranks: Tensor,
    idx: BatchIndices,
    step: u32,
    /// Bag weights of the current batch, by member and in segment order.
    weights: Tensor,
    seg_weights: Tensor,
    /// Per-example losses of the last steps, on the device; read back every `LOSS_LOG_STEPS` steps at most.
    loss_log: Tensor,
    /// Rows logged per step since the last read-back.
    logged: Vec<usize>,
    /// Losses already read back but not yet taken.
    loss_pending: f64,
    /// Rows of logits over all items the workspace holds (the evaluation's batch).
    eval_rows: usize,
    /// The sampled softmax's sampler and workspace, when the loss is sampled.
    sampled: Option<SampledState>,
}

/// The loss a network trains with.
#[derive(Debug, Clone, PartialEq)]
pub enum LossSpec {
    /// Softmax over every item.
    Softmax,
    /// Sampled softmax (see [`crate::recommend::sampling`]): `negatives` draws per batch from weights proportional to
    /// `proposal` (one per item), seeded; trained with lazy Adam (only the batch's rows and columns move).
    Sampled { negatives: usize, proposal: Vec<f64>, seed: u64 },
}

/// Logits over all items held for evaluation on a GPU when the loss is sampled: batches of evaluation rows stay
/// under this many values (64 MB), so that a catalogue of 10^6 items ranks 16 rows at a time instead of a batch × V
/// matrix.
pub const EVAL_LOGITS: usize = 1 << 24;

/// Rows per evaluation call. The CPU scores the items a block at a time (`Backend::rank_and_loss`) and holds no
/// logits for evaluation, so it ranks a whole batch at once; a GPU holds the rows' logits over all items, under
/// [`EVAL_LOGITS`] when the loss is sampled (the full softmax holds a batch × V of them for training anyway).
pub fn eval_rows(items: usize, capacity: usize, sampled: bool, device: crate::backend::BackendKind) -> usize {
    if sampled && device != crate::backend::BackendKind::Cpu {
        (EVAL_LOGITS / items.max(1)).clamp(1, capacity)
    } else {
        capacity
    }
}

/// The sampled softmax's state: the proposal, the sampling stream, and the workspace of one batch's candidates
/// (at most `negatives` + batch columns).
struct SampledState {
    negatives: usize,
    table: AliasTable,
    rng: SplitMix,
    max_cols: usize,
    columns: Indices,
    target_columns: Indices,
    w2s: Tensor,
    b2s: Tensor,
    log_q: Tensor,
    shared: Tensor,
    d_w2s: Tensor,
    d_b2s: Tensor,
    /// The last batch's candidate count.
    cols: usize,
}

/// The transpose of a row-major rows×cols matrix.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// Steps whose losses stay on the device before they are read back.
pub const LOSS_LOG_STEPS: usize = 16;

/// Index buffers of one batch.
struct BatchIndices {
    items: Indices,
    offsets: Indices,
    targets: Indices,
    seg_items: Indices,
    seg_offsets: Indices,
    seg_examples: Indices,
    mask_items: Indices,
    mask_offsets: Indices,
}

const EMB: usize = 0;
const W1: usize = 1;
const B1: usize = 2;
const W2: usize = 3;
const B2: usize = 4;

/// A batch laid out for the backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub items: Vec<u32>,
    pub offsets: Vec<u32>,
    /// One weight per bag member (1 when unweighted).
    pub weights: Vec<f32>,
    pub targets: Vec<u32>,
    pub seg_items: Vec<u32>,
    pub seg_offsets: Vec<u32>,
    pub seg_examples: Vec<u32>,
    /// The weight of each occurrence, in segment order.
    pub seg_weights: Vec<f32>,
}

impl Batch {
    /// Lays out `examples` with weight 1 for every input.
    pub fn new<'e>(examples: impl Iterator<Item = &'e Example>) -> Batch {
        Batch::weighted(examples, |_, _| 1.0)
    }

    /// Lays out `examples`: bags with `weight(user, item)` per input, targets, and the occurrences grouped by item
    /// for the segment-sum backward.
    pub fn weighted<'e>(examples: impl Iterator<Item = &'e Example>, weight: impl Fn(u32, u32) -> f32) -> Batch {
        let mut b = Batch { offsets: vec![0], ..Batch::default() };
        for e in examples {
            b.items.extend_from_slice(&e.inputs);
            b.weights.extend(e.inputs.iter().map(|&i| weight(e.user, i)));
            b.offsets.push(b.items.len() as u32);
            b.targets.push(e.target);
        }
        let mut occ: Vec<(u32, u32, usize)> = Vec::with_capacity(b.items.len());
        for r in 0..b.targets.len() {
            for j in b.offsets[r] as usize..b.offsets[r + 1] as usize {
                occ.push((b.items[j], r as u32, j));
            }
        }
        occ.sort_unstable();
        for (i, &(item, ex, j)) in occ.iter().enumerate() {
            if i == 0 || occ[i - 1].0 != item {
                b.seg_items.push(item);
                b.seg_offsets.push(i as u32);
            }
            b.seg_examples.push(ex);
            b.seg_weights.push(b.weights[j]);
        }
        b.seg_offsets.push(occ.len() as u32);
        b
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// A zeroed tensor of `len` values; one that does not fit the device is an error naming it and its size.
fn named_zeros(be: &dyn Backend, name: &str, len: usize) -> Result<Tensor> {
    be.zeros(len).map_err(|e| match e {
        Error::Gpu(m) => Error::Gpu(format!("{name} ({len} values): {m}")),
        e => e,
    })
}

/// The parameters on the backend, each with its gradient and optimizer state. The sampled softmax (`item_major`)
/// keeps the output weights item-major (V × pre): a candidate's weights are one contiguous row to gather and
/// update; its output-layer gradients are compact (the candidates' rows, in the sampled state).
fn resident_params(
    be: &dyn Backend,
    shape: Shape,
    params: &HostParams,
    optimizer: Optimizer,
    item_major: bool,
) -> Result<Vec<Param>> {
    let w2_stored = if item_major { transpose(&params.w2, shape.pre_logits(), shape.items) } else { params.w2.clone() };
    let parts = [&params.emb, &params.w1, &params.b1, &w2_stored, &params.b2];
    let names = ["embedding table", "hidden weights", "hidden bias", "output weights", "output bias"];
    let mut ps = Vec::new();
    for (i, (p, name)) in parts.into_iter().zip(names).enumerate() {
        let len = p.len().max(1);
        let value = if p.is_empty() { be.zeros(len) } else { be.tensor(p) }.map_err(|e| match e {
            Error::Gpu(m) => Error::Gpu(format!("{name} ({} values): {m}", p.len())),
            e => e,
        })?;
        let state = match optimizer {
            Optimizer::Adam => OptimizerState::Adam { m: be.zeros(len)?, v: be.zeros(len)? },
            Optimizer::Sgd => OptimizerState::Sgd { velocity: be.zeros(len)? },
        };
        let grad = if item_major && (i == W2 || i == B2) { be.zeros(1)? } else { be.zeros(len)? };
        ps.push(Param { value, grad, state });
    }
    Ok(ps)
}

impl SampledState {
    /// The sampler over `proposal` (with its seed) and the workspace of a batch's candidate columns: at most
    /// negatives + batch of the `items`, `pre` wide.
    fn new(
        be: &dyn Backend,
        (negatives, proposal, seed): (usize, &[f64], u64),
        items: usize,
        pre: usize,
        capacity: usize,
    ) -> Result<SampledState> {
        let max_cols = (negatives + capacity).min(items).max(1);
        Ok(SampledState {
            negatives,
            table: AliasTable::new(proposal),
            rng: SplitMix::new(seed ^ 0x6e65_6761_7469_7665),
            max_cols,
            columns: be.index_buffer(max_cols)?,
            target_columns: be.index_buffer(capacity)?,
            w2s: named_zeros(be, "sampled output weights (pre × candidates)", pre * max_cols)?,
            b2s: named_zeros(be, "sampled output bias", max_cols)?,
            log_q: named_zeros(be, "log-Q corrections", max_cols)?,
            shared: named_zeros(be, "shared-negative flags", max_cols)?,
            d_w2s: named_zeros(be, "sampled output weight gradient", pre * max_cols)?,
            d_b2s: named_zeros(be, "sampled output bias gradient", max_cols)?,
            cols: 0,
        })
    }
}

impl<'b> Network<'b> {
    /// Uploads `params` and allocates everything a batch of up to `capacity` examples with up to `max_inputs`
    /// inputs each needs.
    pub fn new(
        be: &'b dyn Backend,
        shape: Shape,
        params: &HostParams,
        optimizer: Optimizer,
        capacity: usize,
        max_inputs: usize,
    ) -> Result<Network<'b>> {
        Network::with_loss(be, shape, params, optimizer, capacity, max_inputs, &LossSpec::Softmax)
    }

    /// As [`Network::new`], training with `loss`.
    pub fn with_loss(
        be: &'b dyn Backend,
        shape: Shape,
        params: &HostParams,
        optimizer: Optimizer,
        capacity: usize,
        max_inputs: usize,
        loss: &LossSpec,
    ) -> Result<Network<'b>> {
        let Shape { items: v, dim: d, hidden: n, .. } = shape;
        if matches!(loss, LossSpec::Sampled { .. }) && optimizer != Optimizer::Adam {
            return Err(Error::Stage {
                stage: "model",
                message: "the sampled softmax trains with lazy Adam: set train.optimizer = \"adam\"".into(),
            });
        }
        let pre = shape.pre_logits();
        let item_major = matches!(loss, LossSpec::Sampled { .. });
        let ps = resident_params(be, shape, params, optimizer, item_major)?;
        let max_items = capacity * max_inputs.max(1);
        // A tensor that does not fit the device is an error naming it and its shape.
        let zeros = |name: &str, len: usize| named_zeros(be, name, len);
        let (eval_rows, sampled) = match loss {
            LossSpec::Softmax => (capacity, None),
            LossSpec::Sampled { negatives, proposal, seed } => {
                let state = SampledState::new(be, (*negatives, proposal, *seed), v, pre, capacity)?;
                (eval_rows(v, capacity, true, be.kind()), Some(state))
            }
        };
        let logits_len = match &sampled {
            None => capacity * v,
            Some(s) if be.kind() == crate::backend::BackendKind::Cpu => capacity * s.max_cols,
            Some(s) => (capacity * s.max_cols).max(eval_rows * v),
        };
        Ok(Network {
            be,
            shape,
            capacity,
            max_items,
            params: ps,
            pooled: zeros("pooled embeddings (batch × d)", capacity * d)?,
            hidden: zeros("hidden activations (batch × n)", capacity * n)?,
            logits: zeros("logits (batch × items, or × candidates)", logits_len)?,
            losses: zeros("losses (batch)", capacity)?,
            d_hidden: zeros("hidden gradient", capacity * pre)?,
            d_pooled: zeros("pooled gradient", capacity * d)?,
            ranks: zeros("ranks", capacity)?,
            idx: BatchIndices {
                items: be.index_buffer(max_items)?,
                offsets: be.index_buffer(capacity + 1)?,
                targets: be.index_buffer(capacity)?,
                seg_items: be.index_buffer(max_items)?,
                seg_offsets: be.index_buffer(max_items + 1)?,
                seg_examples: be.index_buffer(max_items)?,
                mask_items: be.index_buffer(0)?,
                mask_offsets: be.index_buffer(capacity + 1)?,
            },
            step: 0,
            weights: zeros("bag weights", max_items)?,
            seg_weights: zeros("segment weights", max_items)?,
            loss_log: zeros("loss log", capacity * LOSS_LOG_STEPS)?,
            logged: Vec::new(),
            loss_pending: 0.0,
            eval_rows,
            sampled,
        })
    }

    /// The most rows [`Network::evaluate`] takes at once.
    pub fn eval_rows(&self) -> usize {
        self.eval_rows
    }

    /// Uploads a batch's indices and weights; returns its size.
    fn upload(&mut self, b: &Batch) -> Result<usize> {
        if b.len() > self.capacity || b.items.len() > self.max_items {
            return Err(Error::Internal(format!(
                "batch of {} examples / {} items exceeds the workspace ({} / {})",
                b.len(),
                b.items.len(),
                self.capacity,
                self.max_items
            )));
        }
        let be = self.be;
        be.write_indices(&mut self.idx.items, &b.items)?;
        be.write_indices(&mut self.idx.offsets, &b.offsets)?;
        be.write_indices(&mut self.idx.targets, &b.targets)?;
        be.write_indices(&mut self.idx.seg_items, &b.seg_items)?;
        be.write_indices(&mut self.idx.seg_offsets, &b.seg_offsets)?;
        be.write_indices(&mut self.idx.seg_examples, &b.seg_examples)?;
        be.write(&self.weights, &b.weights)?;
        be.write(&self.seg_weights, &b.seg_weights)?;
        Ok(b.len())
    }

    /// The bags of the uploaded batch of `rows` examples.
    fn bags(&self, rows: usize) -> Bags<'_> {
        Bags {
            bags: rows,
            items: &self.idx.items,
            offsets: &self.idx.offsets,
            weights: &self.weights,
            seg_weights: &self.seg_weights,
            seg_items: &self.idx.seg_items,
            seg_offsets: &self.idx.seg_offsets,
            seg_examples: &self.idx.seg_examples,
        }
    }

    /// The layers before the output layer; returns the activation that feeds the logits (rows × pre_logits).
    fn forward_hidden(&self, rows: usize) -> Result<&Tensor> {
        let be = self.be;
        let Shape { dim: d, hidden: n, pooling, .. } = self.shape;
        be.embedding_bag(&self.params[EMB].value, d, &self.bags(rows), pooling == Pooling::Mean, &self.pooled)?;
        let pre = if n > 0 {
            let dims = MatDims { m: rows, n, k: d };
            let (w1, b1) = (&self.params[W1].value, &self.params[B1].value);
            be.matmul_bias_act(&self.pooled, false, w1, false, &self.hidden, dims, b1, Activation::Relu)?;
            &self.hidden
        } else {
            &self.pooled
        };
        Ok(pre)
    }

    /// The summed loss (f64) of the steps since the last call; reads the device's loss log back once.
    pub fn take_loss(&mut self) -> Result<f64> {
        let mut total = std::mem::take(&mut self.loss_pending);
        if !self.logged.is_empty() {
            let log = self.be.read(&self.loss_log)?;
            for (slot, &rows) in self.logged.iter().enumerate() {
                total +=
                    log[slot * self.capacity..slot * self.capacity + rows].iter().map(|&l| f64::from(l)).sum::<f64>();
            }
            self.logged.clear();
        }
        Ok(total)
    }

    /// Forward, loss and backward of one batch, then one optimizer step. The loss stays on the device until
    /// [`Network::take_loss`] (or a full log) reads it back.
    pub fn train_step(&mut self, batch: &Batch, opts: &TrainOptions) -> Result<()> {
        if self.logged.len() == LOSS_LOG_STEPS {
            self.loss_pending += self.take_loss()?;
        }
        if self.sampled.is_some() {
            let draws = self.draw_negatives()?;
            self.sampled_backward(batch, &draws)?;
            return self.sampled_step(opts);
        }
        let rows = self.upload(batch)?;
        let be = self.be;
        let Shape { items: v, hidden: n, .. } = self.shape;
        let pre_t = self.forward_hidden(rows)?;
        let p = &self.params;
        let layer = OutputLayer {
            pre: pre_t,
            weight: &p[W2].value,
            bias: &p[B2].value,
            targets: &self.idx.targets,
            dims: MatDims { m: rows, n: v, k: self.shape.pre_logits() },
        };
        let grads = OutputGrads {
            logits: &self.logits,
            losses: &self.losses,
            weight: &p[W2].grad,
            bias: &p[B2].grad,
            pre: &self.d_hidden,
        };
        be.output_layer_xent(&layer, &grads)?;
        be.copy(&self.losses, 0, &self.loss_log, self.logged.len() * self.capacity, rows)?;
        self.logged.push(rows);
        self.input_backward(rows, true)?;
        self.step += 1;
        for (i, p) in self.params.iter().enumerate() {
            if n == 0 && (i == W1 || i == B1) {
                continue;
            }
            match &p.state {
                OptimizerState::Adam { m, v } => be.adam(&p.value, &p.grad, m, v, self.adam_step(opts))?,
                OptimizerState::Sgd { velocity } => {
                    let step = SgdStep {
                        lr: opts.learning_rate as f32,
                        momentum: opts.momentum as f32,
                        weight_decay: opts.weight_decay as f32,
                    };
                    be.sgd(&p.value, &p.grad, velocity, step)?
                }
            }
        }
        Ok(())
    }

    /// The Adam hyper-parameters of the current step (PyTorch's defaults: β 0.9 / 0.999, ε 1e-8).
    fn adam_step(&self, opts: &TrainOptions) -> AdamStep {
        AdamStep {
            lr: opts.learning_rate as f32,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: opts.weight_decay as f32,
            t: self.step,
        }
    }

    /// The next batch's negatives, drawn from the proposal with the network's seeded stream.
    pub fn draw_negatives(&mut self) -> Result<Vec<u32>> {
        let s = self.sampled.as_mut().ok_or_else(|| Error::Internal("negatives without a sampled loss".into()))?;
        Ok((0..s.negatives).map(|_| s.table.draw(&mut s.rng)).collect())
    }

    /// Forward, sampled loss and backward of one batch with the given negative `draws`: the loss goes to the loss
    /// log; the gradients stay on the device, compact (the candidate columns of the output layer, the batch's rows
    /// of the embedding table) until [`Network::sampled_gradients`] or the optimizer step reads them.
    pub fn sampled_backward(&mut self, batch: &Batch, draws: &[u32]) -> Result<()> {
        let rows = self.upload(batch)?;
        let be = self.be;
        let pre = self.shape.pre_logits();
        let st =
            self.sampled.as_mut().ok_or_else(|| Error::Internal("sampled_backward without a sampled loss".into()))?;
        let cand = Candidates::new(&st.table, draws, &batch.targets);
        let cols = cand.items.len();
        if cols > st.max_cols {
            return Err(Error::Internal(format!("{cols} candidates, more than the workspace's {}", st.max_cols)));
        }
        be.write_indices(&mut st.columns, &cand.items)?;
        be.write_indices(&mut st.target_columns, &cand.target_columns)?;
        be.write(&st.log_q, &cand.log_q)?;
        be.write(&st.shared, &cand.shared)?;
        st.cols = cols;
        let st = self.sampled.as_ref().ok_or_else(|| Error::Internal("sampled state".into()))?;
        let p = &self.params;
        be.gather(&p[W2].value, &st.columns, pre, (pre, 1), &st.w2s)?;
        be.gather(&p[B2].value, &st.columns, 1, (1, 0), &st.b2s)?;
        let pre_t = self.forward_hidden(rows)?;
        be.matmul(pre_t, false, &st.w2s, true, &self.logits, MatDims { m: rows, n: cols, k: pre }, 0.0)?;
        let columns = SampledColumns {
            count: cols,
            bias: &st.b2s,
            log_q: &st.log_q,
            shared: &st.shared,
            targets: &st.target_columns,
        };
        be.sampled_softmax_xent(&self.logits, rows, &columns, &self.losses, &st.d_b2s)?;
        be.copy(&self.losses, 0, &self.loss_log, self.logged.len() * self.capacity, rows)?;
        be.matmul(&self.logits, true, pre_t, false, &st.d_w2s, MatDims { m: cols, n: pre, k: rows }, 0.0)?;
        be.matmul(&self.logits, false, &st.w2s, false, &self.d_hidden, MatDims { m: rows, n: pre, k: cols }, 0.0)?;
        self.input_backward(rows, false)?;
        self.logged.push(rows);
        Ok(())
    }

    /// From the gradient of the layer that feeds the logits (`d_hidden`): the hidden layer's gradients and the
    /// embedding rows' (every other row zeroed when `zero_others`, for the dense optimizers).
    fn input_backward(&self, rows: usize, zero_others: bool) -> Result<()> {
        let be = self.be;
        let Shape { dim: d, hidden: n, pooling, .. } = self.shape;
        let p = &self.params;
        let d_pooled = if n > 0 {
            be.relu_backward(&self.d_hidden, &self.hidden)?;
            be.matmul(&self.pooled, true, &self.d_hidden, false, &p[W1].grad, MatDims { m: d, n, k: rows }, 0.0)?;
            be.column_sums(&self.d_hidden, rows, n, &p[B1].grad)?;
            be.matmul(&self.d_hidden, false, &p[W1].value, true, &self.d_pooled, MatDims { m: rows, n: d, k: n }, 0.0)?;
            &self.d_pooled
        } else {
            &self.d_hidden
        };
        be.embedding_bag_backward(d_pooled, d, &self.bags(rows), pooling == Pooling::Mean, &p[EMB].grad, zero_others)
    }

    /// One lazy Adam step after [`Network::sampled_backward`]: the hidden layer in full, the embedding rows of the
    /// batch's inputs and the output layer's candidate columns only.
    fn sampled_step(&mut self, opts: &TrainOptions) -> Result<()> {
        self.step += 1;
        let be = self.be;
        let Shape { dim: d, hidden: n, .. } = self.shape;
        let pre = self.shape.pre_logits();
        let st = self.sampled.as_ref().ok_or_else(|| Error::Internal("sampled state".into()))?;
        let step = self.adam_step(opts);
        let adam = |i: usize, grad: &Tensor, sel: Option<Selected<'_>>| -> Result<()> {
            let p = &self.params[i];
            let OptimizerState::Adam { m, v } = &p.state else {
                return Err(Error::Internal("the sampled softmax without Adam".into()));
            };
            match sel {
                Some(sel) => be.adam_selected(&p.value, grad, m, v, &sel, step),
                None => be.adam(&p.value, grad, m, v, step),
            }
        };
        let emb = Selected {
            idx: &self.idx.seg_items,
            width: d,
            param_stride: (d, 1),
            grad_stride: (d, 1),
            grad_by_index: true,
        };
        adam(EMB, &self.params[EMB].grad, Some(emb))?;
        if n > 0 {
            adam(W1, &self.params[W1].grad, None)?;
            adam(B1, &self.params[B1].grad, None)?;
        }
        let w2 = Selected {
            idx: &st.columns,
            width: pre,
            param_stride: (pre, 1),
            grad_stride: (pre, 1),
            grad_by_index: false,
        };
        adam(W2, &st.d_w2s, Some(w2))?;
        let b2 =
            Selected { idx: &st.columns, width: 1, param_stride: (1, 0), grad_stride: (1, 0), grad_by_index: false };
        adam(B2, &st.d_b2s, Some(b2))
    }

    /// The gradients of the mean sampled loss left by [`Network::sampled_backward`], as full-size host vectors:
    /// zero outside the batch's embedding rows and candidate columns. `inputs` are the batch's distinct input items
    /// and `columns` its candidates (for checks).
    pub fn sampled_gradients(&self, inputs: &[u32], columns: &[u32]) -> Result<HostParams> {
        let st = self.sampled.as_ref().ok_or_else(|| Error::Internal("sampled state".into()))?;
        let Shape { items: v, dim: d, hidden: n, .. } = self.shape;
        let pre = self.shape.pre_logits();
        let dense = self.gradients()?;
        let mut emb = vec![0.0; v * d];
        for &i in inputs {
            let r = i as usize * d..(i as usize + 1) * d;
            emb[r.clone()].copy_from_slice(&dense.emb[r]);
        }
        let (dw, db) = (self.be.read(&st.d_w2s)?, self.be.read(&st.d_b2s)?);
        let mut w2 = vec![0.0; pre * v];
        let mut b2 = vec![0.0; v];
        for (j, &c) in columns.iter().enumerate() {
            for i in 0..pre {
                w2[i * v + c as usize] = dw[j * pre + i];
            }
            b2[c as usize] = db[j];
        }
        let (w1, b1) = if n > 0 { (dense.w1, dense.b1) } else { (Vec::new(), Vec::new()) };
        Ok(HostParams { emb, w1, b1, w2, b2 })
    }

    /// The sampler's proposal and the number of negatives per batch, when the loss is sampled.
    pub fn sampling(&self) -> Option<(&AliasTable, usize)> {
        self.sampled.as_ref().map(|s| (&s.table, s.negatives))
    }

    /// Loss (summed, f64) and masked target ranks of a batch, without training. `masks[r]` are the items excluded
    /// from row r's ranking (the target itself is never excluded).
    pub fn evaluate(&mut self, batch: &Batch, masks: &[&[u32]]) -> Result<(f64, Vec<f32>)> {
        if batch.len() > self.eval_rows {
            return Err(Error::Internal(format!(
                "an evaluation batch of {} rows, more than the {} the workspace holds",
                batch.len(),
                self.eval_rows
            )));
        }
        let rows = self.upload(batch)?;
        let be = self.be;
        let mut mask_items = Vec::new();
        let mut mask_offsets = vec![0u32];
        for m in masks {
            mask_items.extend_from_slice(m);
            mask_offsets.push(mask_items.len() as u32);
        }
        if mask_items.len() > self.idx.mask_items.capacity() {
            self.idx.mask_items = be.index_buffer(mask_items.len().next_power_of_two())?;
        }
        be.write_indices(&mut self.idx.mask_items, &mask_items)?;
        be.write_indices(&mut self.idx.mask_offsets, &mask_offsets)?;
        let masks = RankMasks {
            targets: &self.idx.targets,
            mask_items: &self.idx.mask_items,
            mask_offsets: &self.idx.mask_offsets,
        };
        let pre = self.forward_hidden(rows)?;
        let dims = MatDims { m: rows, n: self.shape.items, k: self.shape.pre_logits() };
        let (w2, b2, item_major) = (&self.params[W2].value, &self.params[B2].value, self.sampled.is_some());
        be.rank_and_loss(pre, w2, item_major, b2, dims, &masks, &self.logits, &self.ranks, &self.losses)?;
        let ranks = be.read(&self.ranks)?[..rows].to_vec();
        let loss = be.read(&self.losses)?[..rows].iter().map(|&l| l as f64).sum();
        Ok((loss, ranks))
    }

    /// The parameters back on the host.
    pub fn params(&self) -> Result<HostParams> {
        let r = |i: usize| -> Result<Vec<f32>> {
            let mut v = self.be.read(&self.params[i].value)?;
            if self.shape.hidden == 0 && (i == W1 || i == B1) {
                v.clear();
            }
            Ok(v)
        };
        let mut w2 = r(W2)?;
        if self.sampled.is_some() {
            w2 = transpose(&w2, self.shape.items, self.shape.pre_logits());
        }
        Ok(HostParams { emb: r(EMB)?, w1: r(W1)?, b1: r(B1)?, w2, b2: r(B2)? })
    }

    /// The gradients of the mean loss left by the last training step (same layout as the parameters).
    pub fn gradients(&self) -> Result<HostParams> {
        let r = |i: usize| -> Result<Vec<f32>> {
            let mut v = self.be.read(&self.params[i].grad)?;
            if self.shape.hidden == 0 && (i == W1 || i == B1) {
                v.clear();
            }
            Ok(v)
        };
        Ok(HostParams { emb: r(EMB)?, w1: r(W1)?, b1: r(B1)?, w2: r(W2)?, b2: r(B2)? })
    }

    /// Replaces the parameters (e.g. with the best epoch's, for early stopping).
    pub fn set_params(&mut self, p: &HostParams) -> Result<()> {
        for (i, part) in p.parts().into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            if i == W2 && self.sampled.is_some() {
                self.be.write(&self.params[i].value, &transpose(part, self.shape.pre_logits(), self.shape.items))?;
            } else {
                self.be.write(&self.params[i].value, part)?;
            }
        }
        Ok(())
    }

    /// The backend the network lives on.
    pub fn backend(&self) -> &'b dyn Backend {
        self.be
    }

    /// The embedding table tensor (for the neighbour search).
    pub fn embedding_tensor(&self) -> &Tensor {
        &self.params[EMB].value
    }
}

/// The network's main allocations: parameters with gradients and Adam moments, and the batch workspace (on the
/// CPU with the full softmax, the blocked output layer's statistics per row and block of items too). With
/// `negatives` (the sampled softmax) the logits cover the batch's candidates (at most negatives + batch) and, on a
/// GPU, the evaluation's rows over all items (see [`eval_rows`]), and the candidates' output columns
/// twice.
pub fn memory_plan(
    items: usize,
    dim: usize,
    hidden: usize,
    batch: usize,
    negatives: Option<usize>,
    device: crate::backend::BackendKind,
) -> Vec<Item> {
    let (v, d, h, b) = (items as u64, dim as u64, hidden as u64, batch as u64);
    let pre = if h > 0 { h } else { d };
    let params = v * d + d * h + h + pre * v + v;
    let mut plan = match negatives {
        None => {
            vec![item(format!("parameters, gradients and Adam moments 4 × {params} × 4 B on {device}"), 4 * params, 4)]
        }
        // The sampled softmax's output layer has compact gradients (the candidates' rows).
        Some(_) => {
            let out = pre * v + v;
            vec![item(
                format!(
                    "parameters and Adam moments 3 × {params} × 4 B, gradients of the input side {} × 4 B on {device}",
                    params - out
                ),
                3 * params + (params - out),
                4,
            )]
        }
    };
    match negatives {
        None => {
            plan.push(item(format!("logits {b} × {v} × 4 B on {device}"), b * v, 4));
            if device == crate::backend::BackendKind::Cpu {
                // The blocked output layer's per-row statistics and factors of each block of items.
                let blocks = v.div_ceil(crate::backend::cpu::OUTPUT_BLOCK as u64);
                plan.push(item(format!("output layer blocks {b} × {blocks} × 16 B on {device}"), b * blocks * 4, 4));
            }
        }
        Some(n) => {
            let c = (n as u64 + b).min(v);
            if device == crate::backend::BackendKind::Cpu {
                plan.push(item(format!("logits {b} × {c} candidates × 4 B on {device}"), b * c, 4));
            } else {
                let rows = eval_rows(items, batch, true, device) as u64;
                plan.push(item(
                    format!("logits max({b} × {c} candidates, {rows} evaluation rows × {v}) × 4 B on {device}"),
                    (b * c).max(rows * v),
                    4,
                ));
            }
            plan.push(item(format!("candidate columns 2 × {pre} × {c} × 4 B on {device}"), 2 * pre * c, 4));
        }
    }
    plan.push(item(format!("activations {b} × ({d} + {h}) × 8 B on {device}"), b * (d + h) * 2, 4));
    plan
}
