//! Fine-tuning a pretrained encoder on the user's data, on the same [`crate::backend::Backend`] as encoding: the
//! Transformer's forward pass keeping its activations, its backward pass (WGSL kernels with CPU twins), the loss,
//! and AdamW with Hugging Face's linear schedule and gradient clipping.
//!
//! * `params.rs`: the objective and the optimizer's settings, as the plan hands them;
//! * `weights.rs`: the encoder's weights as trainable parameters (value, gradient, moments), named as the
//!   checkpoint names them;
//! * `network.rs`: the forward pass that keeps what the backward pass reads, and the backward pass;
//! * `contrastive.rs`: sentence-transformers' MultipleNegativesRankingLoss;
//! * `optimizer.rs`: clipping, the schedule, AdamW;
//! * `trainer.rs`: a step: forward, loss, backward, update.

mod contrastive;
mod network;
mod optimizer;
mod params;
mod trainer;
mod weights;

pub use contrastive::Contrastive;
pub use network::{Batch, Network};
pub use optimizer::{apply, Update};
pub use params::{ContrastiveParams, Objective, OptimizerParams};
pub use trainer::{ContrastiveTrainer, StepReport};
pub use weights::{LayerParams, LnParams, NamedTensor, Param, TrainableWeights};
