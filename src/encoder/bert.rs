//! The BERT-family encoder on a [`Backend`]: weights uploaded once and resident, a workspace reused from batch to
//! batch, one pass per batch recorded back to back (on the GPU: one command encoder), results read back once.
//!
//! ```text
//! x = LayerNorm(word[id] + position[t] + token_type[type])
//! per layer: qkv = x·W_qkvᵀ + b;  ctx = attention(qkv, mask);  h = LayerNorm(ctx·W_oᵀ + b_o + x)
//!            x = LayerNorm(act(h·W_iᵀ + b_i)·W_outᵀ + b_out + h)
//! pooled = pool(x over each sequence's real tokens), optionally scaled to unit length
//! ```

use super::folder::EncoderConfig;
use super::params::Precision;
use super::tokenize::Tokens;
use super::weights::WeightsFile;
use crate::backend::{
    Activation, AttentionShape, Backend, EmbeddingTables, Indices, LayerNorm, MatDims, PoolMode, SeqShape, Tensor,
    TokenRows,
};
use crate::error::{Error, Result};

/// One layer's resident weights (q, k and v stacked into one product).
struct Layer {
    w_qkv: Tensor,
    b_qkv: Tensor,
    w_o: Tensor,
    b_o: Tensor,
    ln1: (Tensor, Tensor),
    w_i: Tensor,
    b_i: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    ln2: (Tensor, Tensor),
}

/// Activations for batches of up to `rows` token rows.
struct Workspace {
    rows: usize,
    batch: usize,
    ids: Indices,
    type_ids: Indices,
    lens: Indices,
    x: Tensor,
    qkv: Tensor,
    ctx: Tensor,
    h: Tensor,
    inter: Tensor,
    pooled: Tensor,
}

/// A batch under way ([`Encoder::embed_start`]): its pooled vectors on their way back, and its padded length.
pub struct PendingVectors {
    read: crate::backend::ops::PendingRead,
    seq: usize,
}

/// An encoder resident on a backend.
pub struct Encoder<'b> {
    be: &'b dyn Backend,
    pub config: EncoderConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    ln: (Tensor, Tensor),
    layers: Vec<Layer>,
    work: Option<Workspace>,
}

/// A batch laid out for the encoder: sequences padded to `seq` tokens.
struct Padded {
    ids: Vec<u32>,
    type_ids: Vec<u32>,
    lens: Vec<u32>,
    seq: usize,
}

fn pad(batch: &[Tokens]) -> Padded {
    let seq = batch.iter().map(|t| t.ids.len()).max().unwrap_or(1).max(1);
    let mut p = Padded { ids: vec![0; batch.len() * seq], type_ids: vec![0; batch.len() * seq], lens: Vec::new(), seq };
    for (b, t) in batch.iter().enumerate() {
        p.ids[b * seq..b * seq + t.ids.len()].copy_from_slice(&t.ids);
        p.type_ids[b * seq..b * seq + t.type_ids.len()].copy_from_slice(&t.type_ids);
        p.lens.push(t.ids.len() as u32);
    }
    p
}

impl<'b> Encoder<'b> {
    /// Uploads the weights of `config`'s network from `weights`, each checked for its shape; with
    /// [`Precision::F16`] the dense layers' weights are stored in f16 (their products take the f16 path).
    pub fn new(
        be: &'b dyn Backend,
        config: EncoderConfig,
        weights: &WeightsFile,
        precision: Precision,
    ) -> Result<Encoder<'b>> {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        let up = |name: &str, shape: &[usize]| -> Result<Tensor> { be.tensor(&weights.tensor(name, shape)?) };
        let dense = |values: &[f32]| match precision {
            Precision::F32 => be.tensor(values),
            Precision::F16 => be.tensor_f16(values),
        };
        let up_dense = |name: &str, shape: &[usize]| -> Result<Tensor> { dense(&weights.tensor(name, shape)?) };
        let ln = |prefix: &str| -> Result<(Tensor, Tensor)> {
            Ok((up(&format!("{prefix}.LayerNorm.weight"), &[h])?, up(&format!("{prefix}.LayerNorm.bias"), &[h])?))
        };
        let mut layers = Vec::with_capacity(config.layers);
        for l in 0..config.layers {
            let p = format!("encoder.layer.{l}");
            let (mut w_qkv, mut b_qkv) = (Vec::with_capacity(3 * h * h), Vec::with_capacity(3 * h));
            for part in ["query", "key", "value"] {
                w_qkv.extend(weights.tensor(&format!("{p}.attention.self.{part}.weight"), &[h, h])?);
                b_qkv.extend(weights.tensor(&format!("{p}.attention.self.{part}.bias"), &[h])?);
            }
            layers.push(Layer {
                w_qkv: dense(&w_qkv)?,
                b_qkv: be.tensor(&b_qkv)?,
                w_o: up_dense(&format!("{p}.attention.output.dense.weight"), &[h, h])?,
                b_o: up(&format!("{p}.attention.output.dense.bias"), &[h])?,
                ln1: ln(&format!("{p}.attention.output"))?,
                w_i: up_dense(&format!("{p}.intermediate.dense.weight"), &[i, h])?,
                b_i: up(&format!("{p}.intermediate.dense.bias"), &[i])?,
                w_out: up_dense(&format!("{p}.output.dense.weight"), &[h, i])?,
                b_out: up(&format!("{p}.output.dense.bias"), &[h])?,
                ln2: ln(&format!("{p}.output"))?,
            });
        }
        Ok(Encoder {
            be,
            word: up("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position: up("embeddings.position_embeddings.weight", &[config.max_position_embeddings, h])?,
            token_type: up("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?,
            ln: ln("embeddings")?,
            layers,
            config,
            work: None,
        })
    }

    /// Bytes of resident weights of a network (the dense layers' weights in f16 with [`Precision::F16`]).
    pub fn weight_bytes(c: &EncoderConfig, precision: Precision) -> usize {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let dense = 3 * h * h + h * h + i * h + h * i;
        let rest = 3 * h + h + 2 * h + i + h + 2 * h;
        let dense_bytes = if precision == Precision::F16 { 2 } else { 4 };
        4 * (c.vocab_size + c.max_position_embeddings + c.type_vocab_size + 2) * h
            + c.layers * (dense_bytes * dense + 4 * rest)
    }

    /// Bytes of the workspace for `rows` token rows in batches of up to `batch` sequences.
    pub fn workspace_bytes(config: &EncoderConfig, rows: usize, batch: usize) -> usize {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        4 * (rows * (h + 3 * h + h + h + i + 2) + batch * (h + 1))
    }

    /// The workspace for a batch of `rows` token rows and `batch` sequences (grown when needed).
    fn workspace(&mut self, rows: usize, batch: usize) -> Result<()> {
        if self.work.as_ref().is_some_and(|w| w.rows >= rows && w.batch >= batch) {
            return Ok(());
        }
        let (h, i) = (self.config.hidden_size, self.config.intermediate_size);
        let (rows, batch) = (rows.next_power_of_two(), batch.next_power_of_two());
        let be = self.be;
        let zeros = |n: usize, what: &str| {
            be.zeros(n).map_err(|e| match e {
                Error::Gpu(m) => Error::Gpu(format!("encoder {what} ({n} values): {m}")),
                e => e,
            })
        };
        self.work = Some(Workspace {
            rows,
            batch,
            ids: be.index_buffer(rows)?,
            type_ids: be.index_buffer(rows)?,
            lens: be.index_buffer(batch)?,
            x: zeros(rows * h, "hidden states")?,
            qkv: zeros(rows * 3 * h, "queries, keys and values")?,
            ctx: zeros(rows * h, "attention output")?,
            h: zeros(rows * h, "hidden states")?,
            inter: zeros(rows * i, "intermediate activations")?,
            pooled: zeros(batch * h, "pooled vectors")?,
        });
        Ok(())
    }

    /// Runs the encoder over `batch`; the last hidden state stays in the workspace's `x`. Returns the padded length.
    fn forward(&mut self, batch: &[Tokens]) -> Result<usize> {
        self.forward_keeping(batch, &[]).map(|(seq, _)| seq)
    }

    /// [`Self::forward`], also reading back the hidden states `keep` names (0: the embeddings' output, l: after
    /// layer l), in the order given: each batch · padded length × hidden, padding rows included.
    fn forward_keeping(&mut self, batch: &[Tokens], keep: &[usize]) -> Result<(usize, Vec<Vec<f32>>)> {
        if let Some(&l) = keep.iter().find(|&&l| l > self.layers.len()) {
            return Err(Error::Internal(format!("hidden state {l} of a {}-layer encoder", self.layers.len())));
        }
        let mut kept: Vec<Option<Vec<f32>>> = vec![None; keep.len()];
        let c = &self.config;
        if let Some(t) = batch.iter().find(|t| t.ids.len() > c.max_tokens() || t.ids.is_empty()) {
            return Err(Error::Internal(format!("a sequence of {} tokens (1 to {})", t.ids.len(), c.max_tokens())));
        }
        if let Some(&id) = batch.iter().flat_map(|t| &t.ids).find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Internal(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
        }
        if let Some(&ty) = batch.iter().flat_map(|t| &t.type_ids).find(|&&t| t as usize >= c.type_vocab_size) {
            return Err(Error::Internal(format!("token type {ty} is outside the {} types", c.type_vocab_size)));
        }
        let p = pad(batch);
        let rows = batch.len() * p.seq;
        self.workspace(rows, batch.len())?;
        let (be, c) = (self.be, &self.config);
        let Some(w) = self.work.as_mut() else { return Err(Error::Internal("no encoder workspace".into())) };
        be.write_indices(&mut w.ids, &p.ids)?;
        be.write_indices(&mut w.type_ids, &p.type_ids)?;
        be.write_indices(&mut w.lens, &p.lens)?;
        let w = &*w;
        let (h, i, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps as f32);
        let tables = EmbeddingTables {
            word: &self.word,
            position: &self.position,
            token_type: &self.token_type,
            ln: LayerNorm { gamma: &self.ln.0, beta: &self.ln.1, eps },
            cols: h,
            position_offset: c.position_offset,
        };
        be.embed_layernorm(&tables, &TokenRows { ids: &w.ids, type_ids: &w.type_ids, seq: p.seq }, &w.x)?;
        let keep_state = |layer: usize, kept: &mut Vec<Option<Vec<f32>>>| -> Result<()> {
            if keep.contains(&layer) {
                let mut v = be.read(&w.x)?;
                v.truncate(rows * h);
                for (slot, _) in kept.iter_mut().zip(keep).filter(|(_, &k)| k == layer) {
                    *slot = Some(v.clone());
                }
            }
            Ok(())
        };
        keep_state(0, &mut kept)?;
        let shape = AttentionShape {
            batch: batch.len(),
            seq: p.seq,
            heads: c.heads,
            head_dim: c.head_dim(),
            scale: 1.0 / (c.head_dim() as f32).sqrt(),
            dropout: None,
        };
        let dense = |x: &Tensor, wt: &Tensor, b: &Tensor, out: &Tensor, n: usize, k: usize, act: Activation| {
            be.linear(x, wt, out, MatDims { m: rows, n, k }, b, act)
        };
        for (n, l) in self.layers.iter().enumerate() {
            dense(&w.x, &l.w_qkv, &l.b_qkv, &w.qkv, 3 * h, h, Activation::Identity)?;
            be.attention(&w.qkv, &w.lens, shape, &w.ctx)?;
            dense(&w.ctx, &l.w_o, &l.b_o, &w.h, h, h, Activation::Identity)?;
            be.add_layernorm(&w.h, &w.x, rows, &LayerNorm { gamma: &l.ln1.0, beta: &l.ln1.1, eps })?;
            dense(&w.h, &l.w_i, &l.b_i, &w.inter, i, h, c.activation)?;
            dense(&w.inter, &l.w_out, &l.b_out, &w.x, h, i, Activation::Identity)?;
            be.add_layernorm(&w.x, &w.h, rows, &LayerNorm { gamma: &l.ln2.0, beta: &l.ln2.1, eps })?;
            keep_state(n + 1, &mut kept)?;
        }
        let kept = kept.into_iter().map(|k| k.ok_or_else(|| Error::Internal("a hidden state was not kept".into())));
        Ok((p.seq, kept.collect::<Result<Vec<_>>>()?))
    }

    /// The hidden states `layers` names (0: the embeddings' output, which mixes in position and token-type
    /// embeddings; l: after layer l), each batch · padded length × hidden, padding rows included; and the padded
    /// length.
    pub fn layer_states(&mut self, batch: &[Tokens], layers: &[usize]) -> Result<(usize, Vec<Vec<f32>>)> {
        self.forward_keeping(batch, layers)
    }

    /// The number of layers (hidden states 0..=layers exist).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The last hidden state of every token row (batch · padded length × hidden), padding rows included.
    pub fn hidden_states(&mut self, batch: &[Tokens]) -> Result<Vec<f32>> {
        let seq = self.forward(batch)?;
        let w = self.work.as_ref().ok_or_else(|| Error::Internal("no encoder workspace".into()))?;
        let mut v = self.be.read(&w.x)?;
        v.truncate(batch.len() * seq * self.config.hidden_size);
        Ok(v)
    }

    /// One vector per sequence (batch × hidden): pooled over its real tokens, scaled to unit length when asked.
    pub fn embed(&mut self, batch: &[Tokens], mode: PoolMode, normalize: bool) -> Result<Vec<f32>> {
        self.embed_keeping(batch, mode, normalize, &[]).map(|(v, _, _)| v)
    }

    /// [`Self::embed`] in two halves: the pass recorded and submitted and the read-back of its pooled vectors
    /// started; [`Self::embed_finish`] waits for them. The next batch can be started in between, so the device
    /// encodes it while the host takes this one's vectors (the same values as [`Self::embed`]).
    pub fn embed_start(&mut self, batch: &[Tokens], mode: PoolMode, normalize: bool) -> Result<PendingVectors> {
        let seq = self.forward(batch)?;
        let h = self.config.hidden_size;
        let w = self.work.as_ref().ok_or_else(|| Error::Internal("no encoder workspace".into()))?;
        self.be.pool(&w.x, &w.lens, SeqShape { batch: batch.len(), seq, cols: h }, mode, &w.pooled)?;
        if normalize {
            self.be.l2_normalize(&w.pooled, batch.len(), h)?;
        }
        Ok(PendingVectors { read: self.be.start_read(&w.pooled, batch.len() * h)?, seq })
    }

    /// The pooled vectors (batch × hidden) and the padded length of a batch started by [`Self::embed_start`].
    pub fn embed_finish(&self, pending: PendingVectors) -> Result<(Vec<f32>, usize)> {
        Ok((self.be.finish_read(pending.read)?, pending.seq))
    }

    /// [`Self::embed`] and [`Self::layer_states`] from one forward pass: the pooled vectors, the padded length and
    /// the hidden states `layers` names (each read back once, as the pass reaches it).
    pub fn embed_keeping(
        &mut self,
        batch: &[Tokens],
        mode: PoolMode,
        normalize: bool,
        layers: &[usize],
    ) -> Result<(Vec<f32>, usize, Vec<Vec<f32>>)> {
        let (seq, states) = self.forward_keeping(batch, layers)?;
        let h = self.config.hidden_size;
        let w = self.work.as_ref().ok_or_else(|| Error::Internal("no encoder workspace".into()))?;
        let shape = SeqShape { batch: batch.len(), seq, cols: h };
        self.be.pool(&w.x, &w.lens, shape, mode, &w.pooled)?;
        if normalize {
            self.be.l2_normalize(&w.pooled, batch.len(), h)?;
        }
        let mut v = self.be.read(&w.pooled)?;
        v.truncate(batch.len() * h);
        Ok((v, seq, states))
    }
}
