//! BERT's masked language model on a [`Backend`]: the masking of a batch (`transformers`'
//! `DataCollatorForLanguageModeling`: each word piece that is not a special token chosen with probability p, of the
//! chosen 80 % replaced by `[MASK]`, 10 % by a random token, 10 % kept), and the loss of the prediction head
//! (`BertForMaskedLM`) on the chosen rows only: gathered from the last hidden state, `t = x·Wdᵀ + bd`,
//! `n = LN(act(t))`, `logits = n·Eᵀ + b` with E the word embeddings (tied), cross-entropy with the original token,
//! averaged over the chosen rows. Its gradient flows back to the head, the word embeddings and the last hidden
//! state (the chosen rows; every other row's is zero).

use super::weights::{LnParams, MlmHeadParams, Param};
use crate::backend::{Activation, Backend, Bags, Indices, LayerNorm, MatDims, Tensor};
use crate::encoder::Tokens;
use crate::error::{Error, Result};
use crate::linalg::rng::SplitMix;

/// `labels`' value for a row that is not predicted (PyTorch's `ignore_index`).
pub const NOT_CHOSEN: i64 = -100;

/// How word pieces are masked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Masking {
    /// Share of the word pieces chosen (0.15).
    pub probability: f64,
    /// The `[MASK]` token's id.
    pub mask_id: u32,
    /// Random replacements are drawn from `0..vocab`.
    pub vocab: usize,
}

/// A batch of masked sequences: the input the encoder sees, and per token the original id where chosen
/// ([`NOT_CHOSEN`] elsewhere).
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedBatch {
    pub tokens: Vec<Tokens>,
    pub labels: Vec<Vec<i64>>,
}

impl MaskedBatch {
    /// The chosen tokens: (row of the padded batch, original id), in row order.
    pub fn chosen(&self) -> Vec<(usize, u32)> {
        let seq = self.tokens.iter().map(|t| t.ids.len()).max().unwrap_or(1).max(1);
        let mut out = Vec::new();
        for (s, labels) in self.labels.iter().enumerate() {
            for (t, &l) in labels.iter().enumerate() {
                if l != NOT_CHOSEN {
                    out.push((s * seq + t, l as u32));
                }
            }
        }
        out
    }
}

/// Masks one sequence (`special[t]`: token t is a special token, never chosen); returns the masked tokens and the
/// labels. The draws per token, in order: chosen? then, if chosen, [MASK]? then, if not, random? then the token.
pub fn mask_sequence(tokens: &Tokens, special: &[bool], m: &Masking, rng: &mut SplitMix) -> (Tokens, Vec<i64>) {
    let mut out = tokens.clone();
    let mut labels = vec![NOT_CHOSEN; tokens.ids.len()];
    for (t, id) in out.ids.iter_mut().enumerate() {
        if special.get(t).copied().unwrap_or(false) || rng.next_f64() >= m.probability {
            continue;
        }
        labels[t] = i64::from(*id);
        if rng.next_f64() < 0.8 {
            *id = m.mask_id;
        } else if rng.next_f64() < 0.5 {
            *id = rng.below(m.vocab) as u32;
        }
    }
    (out, labels)
}

/// Tensors of the loss for up to `rows` chosen tokens.
struct Space {
    rows: usize,
    gathered: Tensor,
    t: Tensor,
    a: Tensor,
    n: Tensor,
    logits: Tensor,
    losses: Tensor,
    d_n: Tensor,
    d_a: Tensor,
    dy_xhat: Tensor,
    d_gathered: Tensor,
    ones: Tensor,
    targets: Indices,
    items: Indices,
    offsets: Indices,
    seg_offsets: Indices,
    seg_examples: Indices,
}

/// The masked-LM loss and its backward pass.
pub struct MaskedLm {
    hidden: usize,
    vocab: usize,
    activation: Activation,
    eps: f32,
    space: Option<Space>,
    chosen: usize,
}

/// One batch's figures: the summed loss over the chosen tokens, how many were chosen, how many the model's most
/// likely token got right (when asked for).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct MlmScore {
    pub loss_sum: f64,
    pub chosen: usize,
    pub correct: usize,
}

fn ln<'a>(p: &'a LnParams, eps: f32) -> LayerNorm<'a> {
    LayerNorm { gamma: &p.gamma.value, beta: &p.beta.value, eps }
}

impl MaskedLm {
    pub fn new(hidden: usize, vocab: usize, activation: Activation, eps: f32) -> MaskedLm {
        MaskedLm { hidden, vocab, activation, eps, space: None, chosen: 0 }
    }

    /// Bytes the loss needs for `rows` chosen tokens.
    pub fn bytes(hidden: usize, vocab: usize, rows: usize) -> usize {
        4 * rows * (8 * hidden + vocab + 8)
    }

    fn space(&mut self, be: &dyn Backend, rows: usize) -> Result<&Space> {
        if self.space.as_ref().is_none_or(|s| s.rows < rows) {
            let rows = rows.next_power_of_two();
            let (h, v) = (self.hidden, self.vocab);
            let z = |n: usize| be.zeros(n);
            self.space = Some(Space {
                rows,
                gathered: z(rows * h)?,
                t: z(rows * h)?,
                a: z(rows * h)?,
                n: z(rows * h)?,
                logits: z(rows * v)?,
                losses: z(rows)?,
                d_n: z(rows * h)?,
                d_a: z(rows * h)?,
                dy_xhat: z(rows * h)?,
                d_gathered: z(rows * h)?,
                ones: be.tensor(&vec![1.0; rows])?,
                targets: be.index_buffer(rows)?,
                items: be.index_buffer(rows)?,
                offsets: be.index_buffer(rows + 1)?,
                seg_offsets: be.index_buffer(rows + 1)?,
                seg_examples: be.index_buffer(rows)?,
            });
        }
        self.space.as_ref().ok_or_else(|| Error::Internal("no masked-LM workspace".into()))
    }

    /// The loss of the `chosen` tokens (row of `hidden`, original id) from the last hidden state `hidden`
    /// (`hidden_rows` × hidden); with `d_hidden`, the gradient of the mean loss with respect to `hidden` is written
    /// there (zero outside the chosen rows) and the head's gradients into its parameters, and the logits' gradient
    /// is kept for [`Self::word_gradient`]. With `count_correct`, the model's most likely tokens are read back and
    /// compared (evaluation).
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &mut self,
        be: &dyn Backend,
        head: &MlmHeadParams,
        word: &Param,
        (hidden, hidden_rows): (&Tensor, usize),
        chosen: &[(usize, u32)],
        d_hidden: Option<&Tensor>,
        count_correct: bool,
    ) -> Result<MlmScore> {
        let m = chosen.len();
        if m == 0 {
            return Err(Error::Internal("a masked-LM batch with no chosen token".into()));
        }
        if let Some(&(r, id)) = chosen.iter().find(|&&(r, id)| r >= hidden_rows || id as usize >= self.vocab) {
            return Err(Error::Internal(format!(
                "masked token {id} at row {r} (of {hidden_rows}, vocabulary {})",
                self.vocab
            )));
        }
        let (h, v, act, eps) = (self.hidden, self.vocab, self.activation, self.eps);
        self.space(be, m)?;
        let s = self.space.as_mut().ok_or_else(|| Error::Internal("no masked-LM workspace".into()))?;
        let rows: Vec<u32> = chosen.iter().map(|&(r, _)| r as u32).collect();
        let seq: Vec<u32> = (0..=m as u32).collect();
        be.write_indices(&mut s.items, &rows)?;
        be.write_indices(&mut s.offsets, &seq)?;
        be.write_indices(&mut s.seg_offsets, &seq)?;
        be.write_indices(&mut s.seg_examples, &seq[..m])?;
        be.write_indices(&mut s.targets, &chosen.iter().map(|&(_, id)| id).collect::<Vec<_>>())?;
        let s = &*s;
        // Rows ascend, so each chosen row is its own segment: the gather and the scatter share their indices.
        let bags = Bags {
            bags: m,
            items: &s.items,
            offsets: &s.offsets,
            weights: &s.ones,
            seg_weights: &s.ones,
            seg_items: &s.items,
            seg_offsets: &s.seg_offsets,
            seg_examples: &s.seg_examples,
        };
        be.embedding_bag(hidden, h, &bags, false, &s.gathered)?;
        be.linear(
            &s.gathered,
            &head.dense_w.value,
            &s.t,
            MatDims { m, n: h, k: h },
            &head.dense_b.value,
            Activation::Identity,
        )?;
        be.activation(&s.t, &s.a, m * h, act)?;
        be.layernorm_keep(&s.a, None, m, &ln(&head.ln, eps), &s.n)?;
        be.linear(&s.n, &word.value, &s.logits, MatDims { m, n: v, k: h }, &head.bias.value, Activation::Identity)?;
        be.softmax_xent(&s.logits, &s.targets, m, v, &s.losses)?;
        let losses = be.read(&s.losses)?;
        let mut score =
            MlmScore { loss_sum: losses.iter().take(m).map(|&l| f64::from(l)).sum(), chosen: m, correct: 0 };
        if count_correct {
            score.correct = correct(&be.read(&s.logits)?, chosen, v);
        }
        self.chosen = m;
        let Some(d_hidden) = d_hidden else { return Ok(score) };
        // The logits now hold the gradient of the mean loss: back through the decoder, the LayerNorm, the
        // activation and the dense layer, to the gathered rows and from there to the hidden state's rows.
        be.column_sums(&s.logits, m, v, &head.bias.grad)?;
        be.matmul(&s.logits, false, &word.value, false, &s.d_n, MatDims { m, n: h, k: v }, 0.0)?;
        be.layernorm_backward(&s.a, &s.d_n, m, &ln(&head.ln, eps), &s.d_a, &s.dy_xhat)?;
        be.column_sums(&s.dy_xhat, m, h, &head.ln.gamma.grad)?;
        be.column_sums(&s.d_n, m, h, &head.ln.beta.grad)?;
        be.activation_backward(&s.t, &s.d_a, m * h, act)?;
        be.matmul(&s.d_a, true, &s.gathered, false, &head.dense_w.grad, MatDims { m: h, n: h, k: m }, 0.0)?;
        be.column_sums(&s.d_a, m, h, &head.dense_b.grad)?;
        be.matmul(&s.d_a, false, &head.dense_w.value, false, &s.d_gathered, MatDims { m, n: h, k: h }, 0.0)?;
        be.embedding_bag_backward(&s.d_gathered, h, &bags, false, d_hidden, true)?;
        Ok(score)
    }

    /// Adds the decoder's share to the word embeddings' gradient (`Eᵀ` is the decoder's weight): call after the
    /// encoder's backward pass, which overwrites that gradient with the embeddings' own share.
    pub fn word_gradient(&self, be: &dyn Backend, word: &Param) -> Result<()> {
        let s = self.space.as_ref().ok_or_else(|| Error::Internal("no masked-LM loss yet".into()))?;
        let dims = MatDims { m: self.vocab, n: self.hidden, k: self.chosen };
        be.matmul(&s.logits, true, &s.n, false, &word.grad, dims, 1.0)
    }
}

/// How many chosen tokens' most likely token is the original, from the mean loss's gradient
/// `(softmax − onehot) / m` (softmax's order survives it once the target's `1/m` is added back).
fn correct(grad: &[f32], chosen: &[(usize, u32)], vocab: usize) -> usize {
    let m = chosen.len() as f32;
    chosen
        .iter()
        .enumerate()
        .filter(|&(i, &(_, target))| {
            let row = &grad[i * vocab..(i + 1) * vocab];
            let p = |j: usize| if j == target as usize { row[j] + 1.0 / m } else { row[j] };
            let best = (0..vocab).fold(0, |b, j| if p(j) > p(b) { j } else { b });
            best == target as usize
        })
        .count()
}
