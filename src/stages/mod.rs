//! The stages of a job, each a unit: it reads what earlier stages left in [`Artifacts`], adds its metrics, and
//! returns its output tables, a one-line summary and its run.json details as a [`StageOutput`].
//! `pipeline::run` is a loop over the stages the plan lists ([`planned`]); adding a stage is a file here, a
//! [`Stage`] variant and its plan.

mod bow;
pub mod contextual;
mod documents;
pub mod finetune;
pub mod handoff;
mod ingest;
mod merged;
mod merged_vectors;
mod model;
mod output_tables;
mod pca;
pub mod vector_cache;

use std::path::Path;

pub use merged::{MergedInput, TextPart};

use crate::backend::{Backend, BackendReport};
use crate::data::dataset::Dataset;
use crate::data::fingerprint::InputFingerprint;
use crate::data::table::Table;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::runtime::metrics::Metrics;
use crate::runtime::progress::Reporter;
use crate::text::vectorizer::Bow;

/// A stage of a job, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reads the input (always first).
    Ingest,
    /// Bag-of-words of the documents, items or users.
    Bow,
    /// PCA of the bag-of-words matrix or the numeric columns.
    Pca,
    /// The embedding model: split, training, evaluation, neighbours.
    Model,
    /// A pretrained encoder trained on the job's documents (before the contextual stage encodes with it).
    Finetune,
    /// Document vectors from a pretrained Transformer encoder.
    Contextual,
    /// A text job's document vectors evaluated: neighbours and, with labels, category agreement.
    Documents,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Bow => "bow",
            Stage::Pca => "pca",
            Stage::Model => "model",
            Stage::Finetune => "finetune",
            Stage::Contextual => "contextual",
            Stage::Documents => "eval_documents",
        }
    }
}

/// The stages this job runs, in order.
pub fn planned(plan: &Plan) -> Vec<Stage> {
    let mut stages = vec![Stage::Ingest];
    if plan.bow.is_some() {
        stages.push(Stage::Bow);
    }
    if plan.pca.is_some() {
        stages.push(Stage::Pca);
    }
    if plan.model.is_some() {
        stages.push(Stage::Model);
    }
    if plan.finetune.is_some() {
        stages.push(Stage::Finetune);
    }
    if plan.contextual.is_some() {
        stages.push(Stage::Contextual);
    }
    if plan.documents.is_some() {
        stages.push(Stage::Documents);
    }
    stages
}

/// One stage's (or timed part's) wall time and summary, as run.json records it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StageRecord {
    pub stage: String,
    pub seconds: f64,
    pub summary: String,
}

/// What every stage may use.
pub struct Context<'a> {
    pub plan: &'a Plan,
    pub backend: &'a dyn Backend,
    pub report: &'a BackendReport,
    pub reporter: &'a dyn Reporter,
    /// The run's staging folder (a shard's, in a shard task): a stage that streams an output writes it here.
    pub out_dir: &'a Path,
    /// The global row index of the first input row (not 0 only in a shard task).
    pub first_row: usize,
    /// In `embjob merge`: the shards whose results replace reading and encoding the input.
    pub shards: Option<&'a dyn MergedInput>,
}

/// What the stages produce for the stages after them.
#[derive(Default)]
pub struct Artifacts {
    pub dataset: Option<Dataset>,
    /// One per input file.
    pub fingerprints: Vec<InputFingerprint>,
    pub bow: Option<Bow>,
    /// Dense document vectors kept for the document evaluation (only when it is planned).
    pub doc_vectors: Vec<DocVectors>,
    /// The encoder cache's key folder this run read, and the segments of vectors it encoded, published into it
    /// when the run commits.
    pub cache_store: Option<std::path::PathBuf>,
    pub cache_segments: Vec<vector_cache::NewSegment>,
    /// The model folder the finetune stage wrote into the staging folder (the contextual stage encodes with it).
    pub finetuned: Option<std::path::PathBuf>,
    /// Input rows the finetune stage held out of its pairs (the document evaluation scores them apart).
    pub held_out: Option<Vec<usize>>,
}

/// One kind of dense document vector, one row per document in input order.
pub struct DocVectors {
    /// "pca", "contextual" or "contextual_start" (the starting model of a fine-tuned one).
    pub method: &'static str,
    pub dim: usize,
    pub values: Vec<f32>,
}

impl Artifacts {
    /// The input, read by the ingest stage.
    pub fn dataset(&self) -> Result<&Dataset> {
        self.dataset.as_ref().ok_or_else(|| Error::Internal("a stage ran before ingest".into()))
    }
}

/// What a stage returns.
#[derive(Default)]
pub struct StageOutput {
    /// Output files (name, table), written into the run folder when every stage is done.
    pub tables: Vec<(&'static str, Table)>,
    /// One line for the progress display and run.json.
    pub summary: String,
    /// The stage's entry under run.json's `details`, if any.
    pub details: Option<serde_json::Value>,
    /// Files the stage wrote into the staging folder itself as it went (name, rows).
    pub written: Vec<(String, usize)>,
    /// Parts timed on their own (the model stage: train, eval), reported by the stage itself; the loop records
    /// these instead of one record for the whole stage.
    pub parts: Vec<StageRecord>,
}

/// Runs one stage.
pub fn run(stage: Stage, ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    match stage {
        Stage::Ingest => ingest::run(ctx, artifacts, metrics),
        Stage::Bow => bow::run(ctx, artifacts, metrics),
        Stage::Pca => pca::run(ctx, artifacts, metrics),
        Stage::Model => model::run(ctx, artifacts, metrics),
        Stage::Finetune => finetune::run(ctx, artifacts, metrics),
        Stage::Contextual => contextual::run(ctx, artifacts, metrics),
        Stage::Documents => documents::run(ctx, artifacts, metrics),
    }
}

/// Whether a stage reports its own progress and parts (the model stage: train, then eval; the contextual stage:
/// documents as they are encoded).
pub fn reports_itself(stage: Stage) -> bool {
    matches!(stage, Stage::Model | Stage::Contextual | Stage::Finetune)
}
