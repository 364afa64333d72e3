//! `[finetune]` checked in two steps, as `[contextual]`: the keys that need no model folder (with every other
//! problem of the config), then the folder read before planning (its pooling, normalisation and token limit).

use super::check_eval::side_file;
use super::config::{Config, FinetuneConfig, Layout};
use super::facts::Facts;
use super::problems::Problems;
use crate::backend::{PoolMode, MAX_SEQ};
use crate::data::input::SideFile;
use crate::encoder::{Architecture, ModelFolder};
use crate::error::{Error, Result};
use crate::finetune::{ContrastiveParams, DropoutRates, Objective, OptimizerParams};

/// `contextual.model`'s value that names the model this job fine-tunes.
pub const FINETUNED: &str = "finetuned";

/// What fine-tuning trains on.
#[derive(Debug, Clone)]
pub enum PairSource {
    /// `finetune.pairs` (contrastive).
    File(SideFile),
    /// Documents sharing a category of `eval.labels`, with a share held out (contrastive).
    Labels { holdout: f64, split_seed: u64 },
    /// The input's documents themselves, with a share held out (masked LM).
    Texts { holdout: f64, split_seed: u64 },
}

/// The fine-tuning stage, resolved against its starting folder.
#[derive(Debug, Clone)]
pub struct FinetunePlan {
    pub folder: ModelFolder,
    pub objective: Objective,
    pub pairs: PairSource,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerParams,
    pub loss: ContrastiveParams,
    pub max_tokens: usize,
    pub pooling: PoolMode,
    pub normalize: bool,
    pub seed: u64,
    /// Masked LM: the share of word pieces chosen.
    pub mlm_probability: f64,
    /// `finetune.dropout`, or the folder's config.
    pub dropout: DropoutRates,
}

/// The keys of `[finetune]` that need no model folder; the pairs file when it is fine.
pub(super) fn check_finetune(
    config: &Config,
    base: &std::path::Path,
    facts: &Facts,
    problems: &mut Problems,
) -> Option<Option<SideFile>> {
    let contextual_wants = config.contextual.as_ref().is_some_and(|c| c.model.trim() == FINETUNED);
    let Some(f) = config.finetune.as_ref() else {
        if contextual_wants {
            problems
                .add("contextual.model", "\"finetuned\" names the model of [finetune], which this job does not have");
        }
        return None;
    };
    let before = problems.count();
    if config.input.layout != Layout::Text {
        problems.add("finetune", "fine-tuning trains on documents: input.layout = \"text\"");
    }
    if f.model.trim().is_empty() || f.model.trim() == FINETUNED {
        problems.add("finetune.model", "must name the starting model's folder");
    }
    numbers(f, problems);
    let mlm = f.objective == Objective::Mlm;
    if mlm && f.pairs.is_some() {
        problems
            .add("finetune.pairs", "pairs train objective = \"contrastive\"; \"mlm\" trains on the input's documents");
    }
    if !mlm && f.mlm_probability.is_some() {
        problems.add("finetune.mlm_probability", "applies to objective = \"mlm\"");
    }
    let pairs = match &f.pairs {
        Some(_) if mlm => None,
        Some(p) => side_file("finetune.pairs", &base.join(p), facts, problems),
        None if mlm => None,
        None => {
            if config.eval.as_ref().and_then(|e| e.labels.as_ref()).is_none() {
                problems
                    .add("finetune.pairs", "fine-tuning needs pairs: finetune.pairs, or eval.labels to draw them from");
            }
            None
        }
    };
    if !mlm && f.pairs.is_some() && f.holdout.is_some() {
        problems
            .add("finetune.holdout", "holds documents out of the pairs drawn from eval.labels; finetune.pairs is set");
    }
    (problems.count() == before).then_some(pairs)
}

fn numbers(f: &FinetuneConfig, problems: &mut Problems) {
    if f.epochs == 0 || f.epochs > 1000 {
        problems.add("finetune.epochs", "must be between 1 and 1000");
    }
    if f.batch_size < 2 || f.batch_size > 4096 {
        problems.add("finetune.batch_size", "must be between 2 and 4096 (each anchor ranks against the others)");
    }
    let positive = [("learning_rate", f.learning_rate), ("scale", f.scale)];
    for (key, v) in positive {
        if !(v.is_finite() && v > 0.0) {
            problems.add(&format!("finetune.{key}"), "must be a positive number");
        }
    }
    for (key, v) in [("weight_decay", f.weight_decay), ("max_grad_norm", f.max_grad_norm)] {
        if !(v.is_finite() && v >= 0.0) {
            problems.add(&format!("finetune.{key}"), "must be 0 or more");
        }
    }
    if !(0.0..=1.0).contains(&f.warmup_ratio) {
        problems.add("finetune.warmup_ratio", "must be between 0 and 1");
    }
    if f.holdout.is_some_and(|h| !(0.0..1.0).contains(&h)) {
        problems.add("finetune.holdout", "must be at least 0 and below 1");
    }
    if f.dropout.is_some_and(|d| !(0.0..1.0).contains(&d)) {
        problems.add("finetune.dropout", "must be at least 0 and below 1");
    }
    if f.mlm_probability.is_some_and(|p| !(p > 0.0 && p < 1.0)) {
        problems.add("finetune.mlm_probability", "must be above 0 and below 1");
    }
    if f.max_tokens == Some(0) || f.max_tokens.is_some_and(|m| m > MAX_SEQ as u64) {
        problems.add("finetune.max_tokens", format!("must be between 1 and {MAX_SEQ}"));
    }
}

/// `[finetune]` against its starting folder.
pub fn finetune_plan(
    config: &Config,
    f: &FinetuneConfig,
    folder: ModelFolder,
    pairs: Option<SideFile>,
) -> Result<FinetunePlan> {
    let config_json = folder.dir.join("config.json");
    let model_max = folder.config.max_tokens().min(MAX_SEQ);
    let max_tokens = match f.max_tokens {
        Some(m) if m as usize > model_max => {
            return Err(Error::input(
                &config_json,
                None,
                format!("finetune.max_tokens = {m} is more than the model takes ({model_max})"),
            ))
        }
        Some(m) => m as usize,
        None => folder.max_seq_length.unwrap_or(model_max).min(model_max),
    };
    let pooling = folder.pooling.unwrap_or(PoolMode::Mean);
    if pooling == PoolMode::Max {
        return Err(Error::input(&folder.dir, None, "the folder pools by maximum, which fine-tuning does not train"));
    }
    if f.objective == Objective::Mlm && folder.config.architecture != Architecture::Bert {
        return Err(Error::input(
            &config_json,
            None,
            "objective = \"mlm\" trains BERT's prediction head (cls.predictions); this folder holds another architecture",
        ));
    }
    let eval = config.eval.as_ref();
    let (holdout, split_seed) = (f.holdout.unwrap_or(0.2), eval.map_or(0, |e| e.split_seed));
    let pairs = match pairs {
        Some(file) => PairSource::File(file),
        None if f.objective == Objective::Mlm => PairSource::Texts { holdout, split_seed },
        None => PairSource::Labels { holdout, split_seed },
    };
    let dropout = match f.dropout {
        Some(d) => DropoutRates { hidden: d as f32, attention: d as f32 },
        None => DropoutRates {
            hidden: folder.config.hidden_dropout as f32,
            attention: folder.config.attention_dropout as f32,
        },
    };
    Ok(FinetunePlan {
        dropout,
        normalize: folder.normalize,
        folder,
        objective: f.objective,
        pairs,
        epochs: f.epochs as usize,
        batch_size: f.batch_size as usize,
        optimizer: OptimizerParams {
            learning_rate: f.learning_rate,
            warmup_ratio: f.warmup_ratio,
            weight_decay: f.weight_decay,
            max_grad_norm: f.max_grad_norm,
            ..OptimizerParams::default()
        },
        loss: ContrastiveParams { scale: f.scale },
        max_tokens,
        pooling,
        seed: f.seed.unwrap_or(config.job.seed),
        mlm_probability: f.mlm_probability.unwrap_or(0.15),
    })
}
