//! One optimizer step over every parameter: the global gradient norm (clipping, as
//! `torch.nn.utils.clip_grad_norm_`), the scheduled learning rate, and AdamW.

use super::params::OptimizerParams;
use super::weights::TrainableWeights;
use crate::backend::{AdamWStep, Backend};
use crate::error::Result;

/// What an optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Update {
    /// The gradients' global l2 norm before clipping.
    pub grad_norm: f64,
    /// The learning rate applied.
    pub learning_rate: f64,
}

/// Applies optimizer step `step` (0 for the first) of `total` to every parameter from its gradient.
pub fn apply(
    be: &dyn Backend,
    weights: &TrainableWeights,
    opt: &OptimizerParams,
    step: usize,
    total: usize,
) -> Result<Update> {
    let params = weights.all();
    let mut squares = 0f64;
    for p in &params {
        squares += be.sum_squares(&p.grad, p.len())?;
    }
    let grad_norm = squares.sqrt();
    let clip = if opt.max_grad_norm > 0.0 { (opt.max_grad_norm / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
    let lr = opt.rate_at(step, total);
    for p in &params {
        let s = AdamWStep {
            lr: lr as f32,
            beta1: opt.beta1 as f32,
            beta2: opt.beta2 as f32,
            eps: opt.eps as f32,
            weight_decay: if p.decay { opt.weight_decay as f32 } else { 0.0 },
            t: u32::try_from(step + 1).unwrap_or(u32::MAX),
            grad_scale: clip as f32,
        };
        be.adamw(&p.value, &p.grad, &p.m, &p.v, s)?;
    }
    Ok(Update { grad_norm, learning_rate: lr })
}
