//! What the plan hands fine-tuning: the objective and its optimizer's settings, validated.

/// The training objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// sentence-transformers' MultipleNegativesRankingLoss: each anchor against its positive, every other
    /// positive of the batch and the hard negatives, cross-entropy over scaled cosines.
    Contrastive,
    /// BERT's masked language model (domain adaptation).
    Mlm,
}

/// The optimizer and schedule of a fine-tuning run (PyTorch's AdamW; Hugging Face's linear schedule with warm-up;
/// `torch.nn.utils.clip_grad_norm_`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct OptimizerParams {
    pub learning_rate: f64,
    /// Warm-up steps: ⌈warmup_ratio · total steps⌉, as `transformers` counts them.
    pub warmup_ratio: f64,
    /// Decoupled weight decay, on every weight but biases and LayerNorm parameters.
    pub weight_decay: f64,
    /// Gradient clipping by the global l2 norm (0: none).
    pub max_grad_norm: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for OptimizerParams {
    fn default() -> Self {
        OptimizerParams {
            learning_rate: 2e-5,
            warmup_ratio: 0.1,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

impl OptimizerParams {
    /// Warm-up steps of a run of `total` steps.
    pub fn warmup_steps(&self, total: usize) -> usize {
        (total as f64 * self.warmup_ratio).ceil() as usize
    }

    /// The learning rate of optimizer step `step` (0 for the first) of `total`: `transformers`'
    /// `get_linear_schedule_with_warmup` (so the first step of a run with warm-up has rate 0).
    pub fn rate_at(&self, step: usize, total: usize) -> f64 {
        let warmup = self.warmup_steps(total);
        let factor = if step < warmup {
            step as f64 / warmup.max(1) as f64
        } else {
            (total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64).max(0.0)
        };
        self.learning_rate * factor
    }
}

/// Contrastive fine-tuning's loss settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ContrastiveParams {
    /// The cosines' factor (sentence-transformers' `scale`, 20 by default: a temperature of 0.05).
    pub scale: f64,
}

/// Dropout while training: of the hidden states (after the embeddings' LayerNorm, the attention output's and the
/// feed-forward output's dense layers) and of the attention probabilities, as BERT places it. Masks are drawn per
/// step from the run's seed (backend/dropout.rs), the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct DropoutRates {
    pub hidden: f32,
    pub attention: f32,
}

impl DropoutRates {
    pub fn is_off(&self) -> bool {
        self.hidden == 0.0 && self.attention == 0.0
    }
}
