//! `[model]`, `[train]` and `[eval]` of a long or list job checked into the recommender's [`ModelParams`], with
//! the evaluation's side files (labels, pairs).

use std::path::Path;

use super::check_eval::{plan_labels, side_file};
use super::config::{Config, EmbeddingDim, EvalConfig, Layout, ModelConfig, Optimizer, TrainConfig};
use super::facts::Facts;
use super::problems::Problems;
use crate::data::input::{LabelsFile, SideFile};
use crate::recommend::sampling::Loss;
use crate::recommend::train::ModelParams;

/// The embedding-layer model, its training and its evaluation.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    pub params: ModelParams,
    /// Item → category, for the similarity evaluation.
    pub labels: Option<LabelsFile>,
    /// Item pairs with human similarity scores (item_a, item_b, score).
    pub pairs: Option<SideFile>,
}

pub(super) fn plan_model(config: &Config, base: &Path, facts: &Facts, problems: &mut Problems) -> Option<ModelPlan> {
    let Some(model) = &config.model else {
        check_without_model(config, problems);
        return None;
    };
    let before = problems.count();
    if !matches!(config.input.layout, Layout::Long | Layout::List) {
        problems.add("model", "the embedding model needs users and items: input.layout = \"long\" or \"list\"");
    }
    check_model_section(model, problems);
    let train = config.train.clone().unwrap_or_default();
    check_train_section(&train, model.loss, problems);
    let eval: EvalConfig = config.eval.clone().unwrap_or_default();
    check_eval_section(&eval, problems);
    let labels = plan_labels(&eval, base, eval.labels_item.as_deref().unwrap_or("item"), facts, problems);
    let pairs = eval.pairs.as_ref().and_then(|p| side_file("eval.pairs", &base.join(p), facts, problems));
    if problems.count() > before {
        return None;
    }
    let params = ModelParams {
        loss: model.loss,
        negatives: model.negatives.unwrap_or(1000) as usize,
        sampler: model.sampler.unwrap_or_default(),
        embedding_dim: match model.embedding_dim {
            EmbeddingDim::Fixed(d) => Some(usize::try_from(d).unwrap_or(usize::MAX)),
            EmbeddingDim::Auto => None,
        },
        hidden_units: model.hidden_units as usize,
        pooling: model.pooling,
        inputs_per_example: model.inputs_per_example as usize,
        epochs: train.epochs as usize,
        batch_size: train.batch_size as usize,
        optimizer: train.optimizer,
        learning_rate: train.learning_rate,
        momentum: train.momentum.unwrap_or(0.0),
        weight_decay: train.weight_decay,
        init: train.init,
        train_seed: train.seed.unwrap_or(config.job.seed),
        patience: train.patience.map(|p| p as usize),
        ks: eval.k.iter().map(|&k| k as usize).collect(),
        neighbors: eval.neighbors as usize,
        test_fraction: eval.test_fraction,
        split_seed: eval.split_seed,
    };
    Some(ModelPlan { params, labels, pairs })
}

/// `[train]` and model-only `[eval]` keys without a `[model]`. (`[eval]` without `[model]` evaluates a text
/// input's documents and word senses: see `check_eval`.)
fn check_without_model(config: &Config, problems: &mut Problems) {
    if config.train.is_some() {
        problems.add("train", "[train] needs a [model] section");
    }
    let Some(e) = &config.eval else { return };
    if config.input.layout != Layout::Text {
        problems.add("eval", "[eval] needs a [model] section (or a text input, whose documents it evaluates)");
        return;
    }
    if e.pairs.is_some() {
        problems.add("eval.pairs", "item pairs need a [model] section; a text job has documents, not items");
    }
    if e.labels_item.is_some() {
        problems.add("eval.labels_item", "a text job's documents are labelled by row: use eval.labels_row");
    }
}

fn check_model_section(model: &ModelConfig, problems: &mut Problems) {
    if let EmbeddingDim::Fixed(d) = model.embedding_dim {
        if d > 4096 {
            problems.add("model.embedding_dim", format!("{d} is more than 4096"));
        }
    }
    if model.hidden_units > 65_536 {
        problems.add("model.hidden_units", format!("{} is more than 65536", model.hidden_units));
    }
    if model.inputs_per_example == 0 || model.inputs_per_example > 1024 {
        problems.add("model.inputs_per_example", "must be between 1 and 1024");
    }
    if model.loss != Loss::SampledSoftmax {
        if model.negatives.is_some() {
            problems.add("model.negatives", "only applies to loss = \"sampled_softmax\"");
        }
        if model.sampler.is_some() {
            problems.add("model.sampler", "only applies to loss = \"sampled_softmax\"");
        }
    }
    if let Some(n) = model.negatives {
        if n == 0 || n > 10_000_000 {
            problems.add("model.negatives", format!("must be between 1 and 10000000 (got {n})"));
        }
    }
}

fn check_train_section(train: &TrainConfig, loss: Loss, problems: &mut Problems) {
    if train.epochs == 0 || train.epochs > 100_000 {
        problems.add("train.epochs", "must be between 1 and 100000");
    }
    if train.batch_size == 0 || train.batch_size > 1 << 20 {
        problems.add("train.batch_size", "must be between 1 and 1048576");
    }
    if !(train.learning_rate.is_finite() && train.learning_rate > 0.0) {
        problems.add("train.learning_rate", format!("must be a positive number (got {})", train.learning_rate));
    }
    if !(train.weight_decay.is_finite() && train.weight_decay >= 0.0) {
        problems.add("train.weight_decay", format!("must be 0 or more (got {})", train.weight_decay));
    }
    match (train.optimizer, train.momentum) {
        (Optimizer::Adam, Some(_)) => problems.add("train.momentum", "only applies to optimizer = \"sgd\""),
        (Optimizer::Sgd, Some(m)) if !(0.0..1.0).contains(&m) => {
            problems.add("train.momentum", format!("must lie in [0, 1) (got {m})"))
        }
        _ => {}
    }
    if train.patience == Some(0) {
        problems.add("train.patience", "must be at least 1 (leave it out to train every epoch)");
    }
    if loss == Loss::SampledSoftmax && train.optimizer != Optimizer::Adam {
        problems.add(
            "train.optimizer",
            "the sampled softmax trains with lazy Adam (only the batch's rows and columns move): use \"adam\"",
        );
    }
}

fn check_eval_section(eval: &EvalConfig, problems: &mut Problems) {
    if eval.k.is_empty() {
        problems.add("eval.k", "must list at least one cut-off");
    }
    if eval.k.contains(&0) {
        problems.add("eval.k", "cut-offs must be at least 1");
    }
    if eval.neighbors == 0 || eval.neighbors > 1000 {
        problems.add("eval.neighbors", "must be between 1 and 1000");
    }
    if !(eval.test_fraction > 0.0 && eval.test_fraction < 1.0) {
        problems.add("eval.test_fraction", format!("must lie strictly between 0 and 1 (got {})", eval.test_fraction));
    }
    if eval.labels_row.is_some() {
        problems.add(
            "eval.labels_row",
            "labels documents of a text input; this job's items are labelled by eval.labels_item",
        );
    }
}
