//! Fine-tuning a batch at a time (contrastive, or masked LM): forward, loss, backward, one optimizer step.

use super::contrastive::Contrastive;
use super::mlm::{MaskedBatch, MaskedLm, MlmScore};
use super::network::{Batch, Network};
use super::optimizer::{self, Update};
use super::params::{ContrastiveParams, OptimizerParams};
use super::weights::TrainableWeights;
use crate::backend::{Backend, PoolMode};
use crate::encoder::{EncoderConfig, Tokens, WeightsFile};
use crate::error::{Error, Result};

/// One training step's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch's mean loss (before the update).
    pub loss: f64,
    pub update: Update,
    /// The batch's padded rows (attention's layout) and its real tokens (the rows of every other layer).
    pub rows: usize,
    pub tokens: usize,
}

/// A contrastive fine-tuning run under way: the trainable network on its backend, the loss's tensors, the
/// optimizer's settings and how far the schedule has come.
pub struct ContrastiveTrainer<'b> {
    be: &'b dyn Backend,
    pub net: Network<'b>,
    loss: Contrastive,
    opt: OptimizerParams,
    pool: PoolMode,
    scale: f32,
    total_steps: usize,
    step: usize,
}

impl<'b> ContrastiveTrainer<'b> {
    /// Uploads the starting weights; batches hold up to `sequences` sequences (anchors and candidates together).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        be: &'b dyn Backend,
        config: EncoderConfig,
        weights: &WeightsFile,
        opt: OptimizerParams,
        loss: ContrastiveParams,
        pool: PoolMode,
        sequences: usize,
        total_steps: usize,
    ) -> Result<ContrastiveTrainer<'b>> {
        let trainable = TrainableWeights::load(be, &config, weights)?;
        let dim = config.hidden_size;
        Ok(ContrastiveTrainer {
            be,
            net: Network::new(be, config, trainable),
            loss: Contrastive::new(be, sequences, dim)?,
            opt,
            pool,
            scale: loss.scale as f32,
            total_steps,
            step: 0,
        })
    }

    /// The loss of a batch (anchors, then their candidates: positives and hard negatives, `anchors.len()` at a
    /// time) and every parameter's gradient; the weights are not changed.
    pub fn loss_and_gradients(&mut self, anchors: &[Tokens], candidates: &[Tokens]) -> Result<(f64, Batch)> {
        let all: Vec<Tokens> = anchors.iter().chain(candidates).cloned().collect();
        let batch = Batch::new(&all);
        self.net.forward(&batch, Some(self.step as u64))?;
        let loss = {
            let (hidden, lens, shape) = self.net.last_hidden()?;
            let d_hidden = self.net.d_last_hidden()?;
            self.loss.loss(self.be, (hidden, lens, shape), anchors.len(), self.pool, self.scale, d_hidden)?
        };
        self.net.backward()?;
        Ok((loss, batch))
    }

    /// One training step on a batch.
    pub fn step(&mut self, anchors: &[Tokens], candidates: &[Tokens]) -> Result<StepReport> {
        let (loss, batch) = self.loss_and_gradients(anchors, candidates)?;
        let update = optimizer::apply(self.be, &self.net.weights, &self.opt, self.step, self.total_steps)?;
        self.step += 1;
        let tokens = anchors.iter().chain(candidates).map(|t| t.ids.len()).sum();
        Ok(StepReport { loss, update, rows: batch.rows(), tokens })
    }

    /// Steps taken.
    pub fn steps(&self) -> usize {
        self.step
    }
}

/// A masked-LM fine-tuning run under way: the encoder with its prediction head on the backend.
pub struct MlmTrainer<'b> {
    be: &'b dyn Backend,
    pub net: Network<'b>,
    loss: MaskedLm,
    opt: OptimizerParams,
    total_steps: usize,
    step: usize,
    /// Whether the head was drawn fresh (the folder had none).
    pub fresh_head: bool,
}

impl<'b> MlmTrainer<'b> {
    /// Uploads the starting weights and the folder's prediction head, or a fresh one seeded by `seed`.
    pub fn new(
        be: &'b dyn Backend,
        config: EncoderConfig,
        weights: &WeightsFile,
        opt: OptimizerParams,
        total_steps: usize,
        seed: u64,
    ) -> Result<MlmTrainer<'b>> {
        let mut trainable = TrainableWeights::load(be, &config, weights)?;
        let fresh_head = trainable.add_mlm_head(be, &config, weights, seed, 0.02)?;
        let loss =
            MaskedLm::new(config.hidden_size, config.vocab_size, config.activation, config.layer_norm_eps as f32);
        Ok(MlmTrainer { be, net: Network::new(be, config, trainable), loss, opt, total_steps, step: 0, fresh_head })
    }

    fn run(&mut self, batch: &MaskedBatch, train: bool) -> Result<(MlmScore, Batch)> {
        let b = Batch::new(&batch.tokens);
        let chosen = batch.chosen();
        self.net.forward(&b, train.then_some(self.step as u64))?;
        let wts = &self.net.weights;
        let head = wts.head.as_ref().ok_or_else(|| Error::Internal("a masked-LM run without its head".into()))?;
        let (hidden, _, _) = self.net.last_hidden()?;
        let d_hidden = if train { Some(self.net.d_last_hidden()?) } else { None };
        let score = self.loss.loss(self.be, head, &wts.word, (hidden, b.rows()), &chosen, d_hidden, !train)?;
        if train {
            self.net.backward()?;
            self.loss.word_gradient(self.be, &self.net.weights.word)?;
        }
        Ok((score, b))
    }

    /// The mean loss of a masked batch and every parameter's gradient; the weights are not changed.
    pub fn loss_and_gradients(&mut self, batch: &MaskedBatch) -> Result<(f64, Batch)> {
        let (score, b) = self.run(batch, true)?;
        Ok((score.loss_sum / score.chosen as f64, b))
    }

    /// One training step on a masked batch.
    pub fn step(&mut self, batch: &MaskedBatch) -> Result<StepReport> {
        let (loss, b) = self.loss_and_gradients(batch)?;
        let update = optimizer::apply(self.be, &self.net.weights, &self.opt, self.step, self.total_steps)?;
        self.step += 1;
        let tokens = batch.tokens.iter().map(|t| t.ids.len()).sum();
        Ok(StepReport { loss, update, rows: b.rows(), tokens })
    }

    /// The summed loss and the correct predictions of a masked batch, nothing trained.
    pub fn evaluate(&mut self, batch: &MaskedBatch) -> Result<MlmScore> {
        Ok(self.run(batch, false)?.0)
    }
}
