//! The encoder's forward pass for training, keeping what the backward pass reads, and the backward pass itself,
//! on a [`Backend`]. Token rows are packed: every row-wise layer (the dense layers, LayerNorms, GELU, dropout) runs
//! on the batch's real tokens only, sequence after sequence; the embeddings' lookup, attention and the last hidden
//! state keep the padded layout (sequences × longest), gathered to and from the packed rows (padding as zeros). Per
//! token and layer it keeps: the layer's input, q|k|v, the attention output, the two residual sums before their
//! LayerNorms, the first LayerNorm's output, and the intermediate activation before and after GELU (see
//! [`Network::activation_bytes`]); attention scores are recomputed in the backward pass.
//!
//! ```text
//! e = word[id] + pos[t] + type[ty];  x0 = LN(e)
//! per layer: qkv = x·Wqkvᵀ + b;  c = attention(qkv);  s1 = c·Woᵀ + bo + x;  h1 = LN1(s1)
//!            u = h1·Wiᵀ + bi;  a = act(u);  s2 = a·Woutᵀ + bout + h1;  x' = LN2(s2)
//! ```

use super::params::DropoutRates;
use super::weights::{LayerParams, LnParams, TrainableWeights};
use crate::backend::{
    Activation, AttentionShape, Backend, Bags, Dropout, EmbeddingTables, Indices, LayerNorm, MatDims, SeqShape, Tensor,
    TokenRows, NO_ROW,
};
use crate::encoder::{EncoderConfig, Tokens};
use crate::error::{Error, Result};

/// One layer's kept activations (packed rows).
struct LayerActs {
    qkv: Tensor,
    ctx: Tensor,
    s1: Tensor,
    h1: Tensor,
    u: Tensor,
    a: Tensor,
    s2: Tensor,
}

/// The gradients' scratch space of the backward pass (packed rows).
struct Scratch {
    d_x: Tensor,
    d_s: Tensor,
    d_h1: Tensor,
    d_u: Tensor,
    d_ctx: Tensor,
    d_qkv: Tensor,
    dy_xhat: Tensor,
}

/// The tensors in the padded layout (sequences × longest rows).
struct Padded {
    /// The embeddings' sum, before it is packed.
    e: Tensor,
    /// A layer's q|k|v, attention's input.
    qkv: Tensor,
    /// Attention's output; in the backward pass, its gradient.
    ctx: Tensor,
    d_qkv: Tensor,
    stats: Tensor,
    last: Tensor,
    d_last: Tensor,
}

/// The index buffers of the embeddings' gradients (one set per table): rows grouped by the row of the table.
struct Segments {
    items: Indices,
    offsets: Indices,
    seg_items: Indices,
    seg_offsets: Indices,
    seg_examples: Indices,
}

/// Activations of a batch of up to `rows` padded rows and `tokens` real tokens.
struct Workspace {
    rows: usize,
    tokens: usize,
    ids: Indices,
    type_ids: Indices,
    lens: Indices,
    /// Each padded row's packed row ([`NO_ROW`] for padding): gathers packed rows into the padded layout.
    to_padded: Indices,
    /// Each packed row's padded row: gathers the padded layout into packed rows.
    to_packed: Indices,
    pad: Padded,
    /// The embeddings' sum, packed (kept: their LayerNorm's input).
    e: Tensor,
    /// One weight per token, for the embeddings' gradient.
    ones: Tensor,
    xs: Vec<Tensor>,
    layers: Vec<LayerActs>,
    scratch: Scratch,
    segments: [Segments; 3],
}

/// A batch laid out for training: `seq` tokens per sequence (padded), each row's token, and the packing of the
/// real tokens.
pub struct Batch {
    pub sequences: usize,
    pub seq: usize,
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    lens: Vec<u32>,
    /// Each real token's padded row, sequence after sequence (ascending).
    packed: Vec<u32>,
    /// Each padded row's packed row, [`NO_ROW`] for padding.
    slots: Vec<u32>,
}

impl Batch {
    /// Pads `tokens` to the longest.
    pub fn new(tokens: &[Tokens]) -> Batch {
        let seq = tokens.iter().map(|t| t.ids.len()).max().unwrap_or(1).max(1);
        let n = tokens.len();
        let mut b = Batch {
            sequences: n,
            seq,
            ids: vec![0; n * seq],
            type_ids: vec![0; n * seq],
            lens: Vec::new(),
            packed: Vec::new(),
            slots: vec![NO_ROW; n * seq],
        };
        for (i, t) in tokens.iter().enumerate() {
            b.ids[i * seq..i * seq + t.ids.len()].copy_from_slice(&t.ids);
            b.type_ids[i * seq..i * seq + t.type_ids.len()].copy_from_slice(&t.type_ids);
            b.lens.push(t.ids.len() as u32);
            for r in i * seq..i * seq + t.ids.len() {
                b.slots[r] = b.packed.len() as u32;
                b.packed.push(r as u32);
            }
        }
        b
    }

    /// Padded rows: what attention and the last hidden state take.
    pub fn rows(&self) -> usize {
        self.sequences * self.seq
    }

    /// Real tokens: the rows the dense layers run on.
    pub fn tokens(&self) -> usize {
        self.packed.len()
    }
}

/// The trainable encoder: its weights, its dropout, and the workspace of the batch under way.
pub struct Network<'b> {
    be: &'b dyn Backend,
    pub config: EncoderConfig,
    pub weights: TrainableWeights,
    work: Option<Workspace>,
    seq: usize,
    sequences: usize,
    tokens: usize,
    dropout: DropoutRates,
    seed: u64,
    /// The training step of the batch under way (its dropout masks); `None`: no dropout.
    step: Option<u64>,
}

/// The dropout sites of a step: the embeddings, then per layer the attention probabilities, the attention
/// output and the feed-forward output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Embeddings,
    Attention(usize),
    AttentionOutput(usize),
    FeedForwardOutput(usize),
}

impl Site {
    fn number(self) -> u32 {
        match self {
            Site::Embeddings => 0,
            Site::Attention(l) => 1 + 3 * l as u32,
            Site::AttentionOutput(l) => 2 + 3 * l as u32,
            Site::FeedForwardOutput(l) => 3 + 3 * l as u32,
        }
    }
}

fn ln<'a>(p: &'a LnParams, eps: f32) -> LayerNorm<'a> {
    LayerNorm { gamma: &p.gamma.value, beta: &p.beta.value, eps }
}

impl<'b> Network<'b> {
    /// A network without dropout; see [`Self::set_dropout`].
    pub fn new(be: &'b dyn Backend, config: EncoderConfig, weights: TrainableWeights) -> Network<'b> {
        let dropout = DropoutRates::default();
        Network { be, config, weights, work: None, seq: 0, sequences: 0, tokens: 0, dropout, seed: 0, step: None }
    }

    /// Dropout at these rates in training steps, its masks drawn from `seed`.
    pub fn set_dropout(&mut self, dropout: DropoutRates, seed: u64) {
        (self.dropout, self.seed) = (dropout, seed);
    }

    /// The mask of `site` in the batch under way, if it drops anything.
    fn mask(&self, site: Site) -> Option<Dropout> {
        let p = if matches!(site, Site::Attention(_)) { self.dropout.attention } else { self.dropout.hidden };
        Dropout::new(p, self.seed, self.step?, site.number())
    }

    /// Bytes of the activations kept for the backward pass and its scratch, for batches of up to `rows` padded
    /// rows holding up to `tokens` real tokens.
    pub fn activation_bytes(c: &EncoderConfig, rows: usize, tokens: usize) -> usize {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        // Packed, per token: the embeddings' sum and output, per layer q|k|v, ctx, s1, h1, u, a, s2 and the
        // layer's output; the scratch d_x, d_s, d_h1, d_u, d_ctx, d_qkv, dy_xhat; its weight, its padded row's
        // index and 3 × 5 indices of the embeddings' segments.
        let per_layer = 3 * h + h + h + h + i + i + h + h;
        let scratch = h + h + h + i + h + 3 * h + h;
        let packed = 4 * tokens * (h + h + c.layers * per_layer + scratch + 1 + 1 + 15);
        // Padded, per row: the embeddings' sum, q|k|v, ctx, d_qkv, the attention statistics, the last hidden state
        // and its gradient; the index buffers (ids, types, lengths, packed rows).
        let padded = 4 * rows * (h + 3 * h + h + 3 * h + 2 * c.heads + h + h + 4);
        packed + padded
    }

    /// Bytes of the weights, their gradients and AdamW's moments.
    pub fn parameter_bytes(&self) -> usize {
        16 * self.weights.values()
    }

    /// Allocates the workspace for batches of up to `rows` padded rows and `tokens` real tokens, exactly (what
    /// [`Self::activation_bytes`] counts), so that a run whose batches stay within them never allocates again.
    pub fn reserve(&mut self, rows: usize, tokens: usize) -> Result<()> {
        self.workspace(rows, tokens, false)
    }

    /// A workspace for at least `rows` padded rows and `tokens` real tokens: as asked, or grown in
    /// powers of two beyond what it held (`grow`: a batch past the reservation).
    fn workspace(&mut self, rows: usize, tokens: usize, grow: bool) -> Result<()> {
        if self.work.as_ref().is_some_and(|w| w.rows >= rows && w.tokens >= tokens) {
            return Ok(());
        }
        let be = self.be;
        let had = |f: fn(&Workspace) -> usize| self.work.as_ref().map_or(0, f);
        let grown = |n: usize, had: usize| if grow { n.max(had).next_power_of_two() } else { n.max(had) };
        let rows = grown(rows.max(1), had(|w| w.rows));
        let tokens = grown(tokens.max(1), had(|w| w.tokens));
        self.work = None;
        let (h, i, heads) = (self.config.hidden_size, self.config.intermediate_size, self.config.heads);
        let z = |n: usize| be.zeros(n);
        let t = tokens;
        let mut layers = Vec::with_capacity(self.config.layers);
        for _ in 0..self.config.layers {
            layers.push(LayerActs {
                qkv: z(t * 3 * h)?,
                ctx: z(t * h)?,
                s1: z(t * h)?,
                h1: z(t * h)?,
                u: z(t * i)?,
                a: z(t * i)?,
                s2: z(t * h)?,
            });
        }
        let segments = || -> Result<Segments> {
            Ok(Segments {
                items: be.index_buffer(t)?,
                offsets: be.index_buffer(t + 1)?,
                seg_items: be.index_buffer(t)?,
                seg_offsets: be.index_buffer(t + 1)?,
                seg_examples: be.index_buffer(t)?,
            })
        };
        self.work = Some(Workspace {
            rows,
            tokens,
            ids: be.index_buffer(rows)?,
            type_ids: be.index_buffer(rows)?,
            lens: be.index_buffer(rows)?,
            to_padded: be.index_buffer(rows)?,
            to_packed: be.index_buffer(t)?,
            pad: Padded {
                e: z(rows * h)?,
                qkv: z(rows * 3 * h)?,
                ctx: z(rows * h)?,
                d_qkv: z(rows * 3 * h)?,
                stats: z(rows * heads * 2)?,
                last: z(rows * h)?,
                d_last: z(rows * h)?,
            },
            e: z(t * h)?,
            ones: be.tensor(&vec![1.0; t])?,
            xs: (0..=self.config.layers).map(|_| z(t * h)).collect::<Result<_>>()?,
            layers,
            scratch: Scratch {
                d_x: z(t * h)?,
                d_s: z(t * h)?,
                d_h1: z(t * h)?,
                d_u: z(t * i)?,
                d_ctx: z(t * h)?,
                d_qkv: z(t * 3 * h)?,
                dy_xhat: z(t * h)?,
            },
            segments: [segments()?, segments()?, segments()?],
        });
        Ok(())
    }

    /// Layer `l`'s attention.
    fn shape(&self, l: usize) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            batch: self.sequences,
            seq: self.seq,
            heads: c.heads,
            head_dim: c.head_dim(),
            scale: 1.0 / (c.head_dim() as f32).sqrt(),
            dropout: self.mask(Site::Attention(l)),
        }
    }

    /// Runs the encoder over `batch`, keeping its activations; the last hidden state is [`Self::last_hidden`].
    /// `step`: the training step (its dropout masks), `None` to evaluate (no dropout).
    pub fn forward(&mut self, batch: &Batch, step: Option<u64>) -> Result<()> {
        let c = &self.config;
        if batch.seq > c.max_tokens() {
            return Err(Error::Internal(format!(
                "a training sequence of {} tokens (at most {})",
                batch.seq,
                c.max_tokens()
            )));
        }
        if let Some(&id) = batch.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Internal(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
        }
        if let Some(&t) = batch.type_ids.iter().find(|&&t| t as usize >= c.type_vocab_size) {
            return Err(Error::Internal(format!("token type {t} is outside the {} types", c.type_vocab_size)));
        }
        let (rows, tokens) = (batch.rows(), batch.tokens());
        self.workspace(rows, tokens, true)?;
        (self.seq, self.sequences, self.tokens, self.step) = (batch.seq, batch.sequences, tokens, step);
        let masks: Vec<[Option<Dropout>; 2]> = (0..self.config.layers)
            .map(|l| [self.mask(Site::AttentionOutput(l)), self.mask(Site::FeedForwardOutput(l))])
            .collect();
        let shapes: Vec<AttentionShape> = (0..self.config.layers).map(|l| self.shape(l)).collect();
        let embeddings_mask = self.mask(Site::Embeddings);
        let (be, c, wts) = (self.be, &self.config, &self.weights);
        let Some(w) = self.work.as_mut() else { return Err(Error::Internal("no training workspace".into())) };
        be.write_indices(&mut w.ids, &batch.ids)?;
        be.write_indices(&mut w.type_ids, &batch.type_ids)?;
        be.write_indices(&mut w.lens, &batch.lens)?;
        be.write_indices(&mut w.to_padded, &batch.slots)?;
        be.write_indices(&mut w.to_packed, &batch.packed)?;
        write_segments(be, &mut w.segments, batch, c)?;
        let w = &*w;
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps as f32);
        let tables = EmbeddingTables {
            word: &wts.word.value,
            position: &wts.position.value,
            token_type: &wts.token_type.value,
            ln: ln(&wts.ln, eps),
            cols: h,
            position_offset: c.position_offset,
        };
        let pad = &w.pad;
        let to_packed = |x: &Tensor, width: usize, out: &Tensor| be.gather(x, &w.to_packed, width, (width, 1), out);
        let to_padded = |x: &Tensor, width: usize, out: &Tensor| be.gather(x, &w.to_padded, width, (width, 1), out);
        be.embed_sum(&tables, &TokenRows { ids: &w.ids, type_ids: &w.type_ids, seq: batch.seq }, &pad.e)?;
        to_packed(&pad.e, h, &w.e)?;
        be.layernorm_keep(&w.e, None, tokens, &ln(&wts.ln, eps), &w.xs[0])?;
        let drop = |x: &Tensor, n: usize, d: Option<Dropout>| d.map_or(Ok(()), |d| be.dropout(x, n, d));
        drop(&w.xs[0], tokens * h, embeddings_mask)?;
        let dense = |x: &Tensor, wt: &Tensor, b: &Tensor, out: &Tensor, n: usize, k: usize| {
            be.linear(x, wt, out, MatDims { m: tokens, n, k }, b, Activation::Identity)
        };
        for (l, (p, a)) in wts.layers.iter().zip(&w.layers).enumerate() {
            let x = &w.xs[l];
            let [attention_out, ffn_out] = masks[l];
            dense(x, &p.qkv_w.value, &p.qkv_b.value, &a.qkv, 3 * h, h)?;
            to_padded(&a.qkv, 3 * h, &pad.qkv)?;
            be.attention(&pad.qkv, &w.lens, shapes[l], &pad.ctx)?;
            to_packed(&pad.ctx, h, &a.ctx)?;
            dense(&a.ctx, &p.o_w.value, &p.o_b.value, &a.s1, h, h)?;
            drop(&a.s1, tokens * h, attention_out)?;
            be.layernorm_keep(&a.s1, Some(x), tokens, &ln(&p.ln1, eps), &a.h1)?;
            dense(&a.h1, &p.i_w.value, &p.i_b.value, &a.u, i, h)?;
            be.activation(&a.u, &a.a, tokens * i, c.activation)?;
            dense(&a.a, &p.out_w.value, &p.out_b.value, &a.s2, h, i)?;
            drop(&a.s2, tokens * h, ffn_out)?;
            be.layernorm_keep(&a.s2, Some(&a.h1), tokens, &ln(&p.ln2, eps), &w.xs[l + 1])?;
        }
        to_padded(&w.xs[c.layers], h, &pad.last)
    }

    /// The last hidden state of the batch under way (padded rows × hidden, padding zero) and the sequences'
    /// lengths.
    pub fn last_hidden(&self) -> Result<(&Tensor, &Indices, SeqShape)> {
        let w = self.work.as_ref().ok_or_else(|| Error::Internal("no forward pass yet".into()))?;
        let shape = SeqShape { batch: self.sequences, seq: self.seq, cols: self.config.hidden_size };
        Ok((&w.pad.last, &w.lens, shape))
    }

    /// A tensor for the last hidden state's gradient (padded rows × hidden; padding rows are not read), to fill
    /// before [`Self::backward`].
    pub fn d_last_hidden(&self) -> Result<&Tensor> {
        Ok(&self.work.as_ref().ok_or_else(|| Error::Internal("no forward pass yet".into()))?.pad.d_last)
    }

    /// The backward pass of the batch of the last [`Self::forward`], from the last hidden state's gradient in
    /// [`Self::d_last_hidden`]: every parameter's gradient is overwritten.
    pub fn backward(&mut self) -> Result<()> {
        let (be, c, wts) = (self.be, &self.config, &self.weights);
        let w = self.work.as_ref().ok_or_else(|| Error::Internal("no forward pass yet".into()))?;
        let tokens = self.tokens;
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps as f32);
        let (s, pad) = (&w.scratch, &w.pad);
        be.gather(&pad.d_last, &w.to_packed, h, (h, 1), &s.d_x)?;
        let maps = Maps { to_padded: &w.to_padded, to_packed: &w.to_packed, lens: &w.lens };
        for (l, (p, a)) in wts.layers.iter().zip(&w.layers).enumerate().rev() {
            let masks = [self.mask(Site::AttentionOutput(l)), self.mask(Site::FeedForwardOutput(l))];
            let dims = (tokens, h, i, eps, c.activation);
            layer_backward(be, (p, a), &w.xs[l], (s, pad), (self.shape(l), masks), &maps, dims)?;
        }
        // The embeddings: their dropout, LayerNorm, then each table's rows of the batch.
        if let Some(d) = self.mask(Site::Embeddings) {
            be.dropout(&s.d_x, tokens * h, d)?;
        }
        ln_backward(be, &w.e, &s.d_x, tokens, &wts.ln, eps, &s.d_s, &s.dy_xhat)?;
        let tables = [&wts.word, &wts.position, &wts.token_type];
        for (param, seg) in tables.into_iter().zip(&w.segments) {
            let bags = Bags {
                bags: tokens,
                items: &seg.items,
                offsets: &seg.offsets,
                weights: &w.ones,
                seg_weights: &w.ones,
                seg_items: &seg.seg_items,
                seg_offsets: &seg.seg_offsets,
                seg_examples: &seg.seg_examples,
            };
            be.embedding_bag_backward(&s.d_s, h, &bags, false, &param.grad, true)?;
        }
        Ok(())
    }
}

/// The index buffers between the packed rows and the padded layout, and the sequences' lengths.
struct Maps<'a> {
    to_padded: &'a Indices,
    to_packed: &'a Indices,
    lens: &'a Indices,
}

/// The gradients of a LayerNorm from its input `pre` and its output's gradient `dy`: `dx`, γ's and β's.
#[allow(clippy::too_many_arguments)]
fn ln_backward(
    be: &dyn Backend,
    pre: &Tensor,
    dy: &Tensor,
    rows: usize,
    p: &LnParams,
    eps: f32,
    dx: &Tensor,
    dy_xhat: &Tensor,
) -> Result<()> {
    let h = p.gamma.len();
    be.layernorm_backward(pre, dy, rows, &ln(p, eps), dx, dy_xhat)?;
    be.column_sums(dy_xhat, rows, h, &p.gamma.grad)?;
    be.column_sums(dy, rows, h, &p.beta.grad)
}

/// A dense layer's gradients (`y = x·Wᵀ + b`, W n×k): W's and b's from `dy` (rows × n) and `x` (rows × k).
fn linear_grads(
    be: &dyn Backend,
    dy: &Tensor,
    x: &Tensor,
    (rows, n, k): (usize, usize, usize),
    w: (&Tensor, &Tensor),
) -> Result<()> {
    be.matmul(dy, true, x, false, w.0, MatDims { m: n, n: k, k: rows }, 0.0)?;
    be.column_sums(dy, rows, n, w.1)
}

/// One layer's backward on `rows` packed rows: `s.d_x` holds the gradient of its output and receives that of its
/// input `x`. `masks`: the dropout of the attention output and of the feed-forward output (the attention's own is
/// in its shape). Attention's backward runs in the padded layout of `pad`.
fn layer_backward(
    be: &dyn Backend,
    (p, a): (&LayerParams, &LayerActs),
    x: &Tensor,
    (s, pad): (&Scratch, &Padded),
    (shape, masks): (AttentionShape, [Option<Dropout>; 2]),
    maps: &Maps<'_>,
    (rows, h, i, eps, act): (usize, usize, usize, f32, Activation),
) -> Result<()> {
    let drop = |g: &Tensor, d: Option<Dropout>| d.map_or(Ok(()), |d| be.dropout(g, rows * h, d));
    // x' = LN2(s2), s2 = D(a·Woutᵀ + bout) + h1: the residual takes the gradient as it is, the dense layer
    // through the mask.
    ln_backward(be, &a.s2, &s.d_x, rows, &p.ln2, eps, &s.d_s, &s.dy_xhat)?;
    be.copy(&s.d_s, 0, &s.d_h1, 0, rows * h)?;
    drop(&s.d_s, masks[1])?;
    linear_grads(be, &s.d_s, &a.a, (rows, h, i), (&p.out_w.grad, &p.out_b.grad))?;
    be.matmul(&s.d_s, false, &p.out_w.value, false, &s.d_u, MatDims { m: rows, n: i, k: h }, 0.0)?;
    be.activation_backward(&a.u, &s.d_u, rows * i, act)?;
    linear_grads(be, &s.d_u, &a.h1, (rows, i, h), (&p.i_w.grad, &p.i_b.grad))?;
    be.matmul(&s.d_u, false, &p.i_w.value, false, &s.d_h1, MatDims { m: rows, n: h, k: i }, 1.0)?;
    // h1 = LN1(s1), s1 = D(c·Woᵀ + bo) + x.
    ln_backward(be, &a.s1, &s.d_h1, rows, &p.ln1, eps, &s.d_s, &s.dy_xhat)?;
    be.copy(&s.d_s, 0, &s.d_x, 0, rows * h)?;
    drop(&s.d_s, masks[0])?;
    linear_grads(be, &s.d_s, &a.ctx, (rows, h, h), (&p.o_w.grad, &p.o_b.grad))?;
    be.matmul(&s.d_s, false, &p.o_w.value, false, &s.d_ctx, MatDims { m: rows, n: h, k: h }, 0.0)?;
    // Attention, padded: q|k|v scattered again from the kept packed rows, the gradient with zeros on padding.
    be.gather(&a.qkv, maps.to_padded, 3 * h, (3 * h, 1), &pad.qkv)?;
    be.gather(&s.d_ctx, maps.to_padded, h, (h, 1), &pad.ctx)?;
    be.attention_backward(&pad.qkv, maps.lens, shape, &pad.ctx, &pad.d_qkv, &pad.stats)?;
    be.gather(&pad.d_qkv, maps.to_packed, 3 * h, (3 * h, 1), &s.d_qkv)?;
    linear_grads(be, &s.d_qkv, x, (rows, 3 * h, h), (&p.qkv_w.grad, &p.qkv_b.grad))?;
    be.matmul(&s.d_qkv, false, &p.qkv_w.value, false, &s.d_x, MatDims { m: rows, n: h, k: 3 * h }, 1.0)
}

/// The embeddings' gradient segments of a batch: for the word, position and token-type tables, the packed tokens
/// grouped by the table row they read (ascending), as `embedding_bag_backward` takes them (one bag per token).
fn write_segments(be: &dyn Backend, segs: &mut [Segments; 3], batch: &Batch, c: &EncoderConfig) -> Result<()> {
    let tokens = batch.tokens();
    let keys: [Box<dyn Fn(usize) -> u32>; 3] = [
        Box::new(|r| batch.ids[r]),
        Box::new(|r| (r % batch.seq + c.position_offset) as u32),
        Box::new(|r| batch.type_ids[r]),
    ];
    let offsets: Vec<u32> = (0..=tokens as u32).collect();
    for (seg, key) in segs.iter_mut().zip(keys) {
        // Each packed token's table row, with the token.
        let all: Vec<u32> = batch.packed.iter().map(|&r| key(r as usize)).collect();
        let mut real: Vec<(u32, u32)> = all.iter().enumerate().map(|(t, &k)| (k, t as u32)).collect();
        real.sort_unstable();
        let (mut items, mut seg_offsets) = (Vec::new(), Vec::new());
        for (n, &(k, _)) in real.iter().enumerate() {
            if items.last() != Some(&k) {
                items.push(k);
                seg_offsets.push(n as u32);
            }
        }
        seg_offsets.push(real.len() as u32);
        let examples: Vec<u32> = real.iter().map(|&(_, t)| t).collect();
        be.write_indices(&mut seg.items, &all)?;
        be.write_indices(&mut seg.offsets, &offsets)?;
        be.write_indices(&mut seg.seg_items, &items)?;
        be.write_indices(&mut seg.seg_offsets, &seg_offsets)?;
        be.write_indices(&mut seg.seg_examples, &examples)?;
    }
    Ok(())
}
