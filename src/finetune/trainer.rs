//! Contrastive fine-tuning, a batch at a time: forward, loss, backward, one optimizer step.

use super::contrastive::Contrastive;
use super::network::{Batch, Network};
use super::optimizer::{self, Update};
use super::params::{ContrastiveParams, OptimizerParams};
use super::weights::TrainableWeights;
use crate::backend::{Backend, PoolMode};
use crate::encoder::{EncoderConfig, Tokens, WeightsFile};
use crate::error::Result;

/// One training step's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The batch's mean loss (before the update).
    pub loss: f64,
    pub update: Update,
    /// Token rows the batch took (padding included) and real tokens.
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
        self.net.forward(&batch)?;
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
