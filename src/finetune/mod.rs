//! Fine-tuning a pretrained encoder on the user's data, on the same [`crate::backend::Backend`] as encoding: the
//! Transformer's forward pass keeping its activations, its backward pass (WGSL kernels with CPU twins), the loss,
//! and AdamW with Hugging Face's linear schedule and gradient clipping.
//!
//! * `params.rs`: the objective and the optimizer's settings, as the plan hands them;
//! * `weights.rs`: the encoder's weights as trainable parameters (value, gradient, moments), named as the
//!   checkpoint names them;
//! * `network.rs`: the forward pass that keeps what the backward pass reads, and the backward pass;
//! * `contrastive.rs`: sentence-transformers' MultipleNegativesRankingLoss;
//! * `mlm.rs`: BERT's masked language model: the masking, the prediction head's loss and its backward pass;
//! * `optimizer.rs`: clipping, the schedule, AdamW;
//! * `trainer.rs`: a step: forward, loss, backward, update;
//! * `pairs.rs`: the seeded batches of training pairs (from labels or a pairs file), and the held-out documents;
//! * `save.rs`: the fine-tuned model folder, loadable by transformers and sentence-transformers.

mod contrastive;
mod mlm;
mod network;
mod optimizer;
mod pairs;
mod params;
mod save;
mod trainer;
mod weights;

pub use contrastive::Contrastive;
pub use mlm::{mask_sequence, MaskedBatch, MaskedLm, Masking, MlmScore, NOT_CHOSEN};
pub use network::{Batch, Network};
pub use optimizer::{apply, Update};
pub use pairs::{file_batches, held_out, label_batches, Example};
pub use params::{ContrastiveParams, DropoutRates, Objective, OptimizerParams};
pub use save::{write_model_folder, SentenceModules};
pub use trainer::{ContrastiveTrainer, MlmTrainer, StepReport};
pub use weights::{LayerParams, LnParams, MlmHeadParams, NamedTensor, Param, TrainableWeights};
