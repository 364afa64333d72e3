//! A [`Config`] checked and resolved into what a run does. Every problem is collected with its key path before any
//! work starts, so `embjob validate` can list them all at once. Planning does no I/O: what it needs to know of
//! the file system (the input's files, the side files, the model folder) is read first, into [`Facts`], by
//! `job::load`. Each section becomes its algorithm's own parameter type (`BowParams`, `PcaParams` once the shape is
//! known, `ModelParams`, `EncodeParams`, `WordsParams`).

mod check_contextual;
mod check_eval;
mod check_features;
mod check_finetune;
mod check_input;
mod check_model;
pub mod config;
mod facts;
mod problems;

use std::path::{Path, PathBuf};

pub use check_contextual::{contextual_plan, CachePlan, ContextualPlan};
pub use check_eval::DocEvalPlan;
pub use check_features::PcaPlan;
pub use check_finetune::{finetune_plan, FinetunePlan, PairSource, FINETUNED};
pub use check_model::ModelPlan;
pub use facts::{Facts, InputListing};

pub use crate::data::input::{InputColumns, InputSpec, LabelsFile, SideFile};
use crate::error::{Error, Result};
use crate::text::vectorizer::BowParams;
use check_features::{plan_bow, plan_pca};
use config::{BackendChoice, Config, Layout};
use problems::Problems;

/// Everything a run needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The pipeline file.
    pub config_file: PathBuf,
    /// The config as written (recorded in run.json).
    pub config: Config,
    pub job_name: String,
    pub seed: u64,
    pub backend: BackendChoice,
    pub input: InputSpec,
    /// Bag-of-words options; `None` for the numeric layout.
    pub bow: Option<BowParams>,
    pub pca: Option<PcaPlan>,
    /// The embedding model with its training and evaluation options.
    pub model: Option<ModelPlan>,
    /// Contextual document vectors from a pretrained encoder (the model folder already read and checked).
    pub contextual: Option<ContextualPlan>,
    /// Fine-tuning of a pretrained encoder before the contextual stage (its starting folder already read).
    pub finetune: Option<FinetunePlan>,
    /// The evaluation of a text input's document vectors (`[eval]` in a text job).
    pub documents: Option<DocEvalPlan>,
    pub output_dir: PathBuf,
    pub keep_runs: usize,
    /// `output.handoff`: word2vec and projector files beside the Parquet tables.
    pub handoff: bool,
    /// `output.plots`: PNG plots and report.html.
    pub plots: bool,
    /// `job.max_memory` in bytes.
    pub max_memory: Option<u64>,
}

/// Overrides from the command line, applied before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<BackendChoice>,
    /// Replaces `output.dir` (relative to the current directory, as command-line paths are).
    pub output_dir: Option<PathBuf>,
    /// `--no-cache`: this run neither reads nor writes the encoder cache.
    pub no_cache: bool,
}

/// The folder relative paths of a pipeline file start from: the file's own folder.
pub fn base_dir(file: &Path) -> PathBuf {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

/// Where the runs go: `--output`, else `output.dir` (relative to the pipeline file), else `out/<job.name>`.
pub fn output_dir(config: &Config, file: &Path, overrides: &Overrides) -> PathBuf {
    let base = base_dir(file);
    match (&overrides.output_dir, &config.output.dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => base.join(dir),
        (None, None) => base.join("out").join(config.job.name.trim()),
    }
}

/// The side files a config names, resolved against the pipeline file's folder: the ones whose existence the plan
/// checks (see [`Facts::files`]).
pub fn side_files(config: &Config, file: &Path) -> Vec<PathBuf> {
    let base = base_dir(file);
    let mut files: Vec<PathBuf> =
        config.finetune.iter().filter_map(|f| f.pairs.as_ref()).map(|p| base.join(p)).collect();
    if let Some(e) = &config.eval {
        files.extend([&e.labels, &e.pairs, &e.senses].into_iter().flatten().map(|p| base.join(p)));
    }
    files
}

impl Plan {
    /// Validates a parsed config against the facts read for it; `file` locates relative paths. Every problem of
    /// the config is reported at once (exit 2); a model folder that cannot be used after that (exit 3).
    pub fn from_config(config: Config, file: &Path, facts: Facts, overrides: &Overrides) -> Result<Plan> {
        let mut problems = Problems::default();
        let base = base_dir(file);
        let job_name = check_job(&config, &mut problems);
        let input = check_input::plan_input(&config, &base, &facts, &mut problems);
        let bow = match (&config.bow, config.input.layout) {
            (Some(_), Layout::Numeric) => {
                problems.add("bow", "the numeric layout has no documents to tokenize; remove [bow]");
                None
            }
            (None, Layout::Numeric) => None,
            (bow, _) => plan_bow(bow.clone().unwrap_or_default(), &mut problems),
        };
        let pca = config.pca.as_ref().and_then(|p| plan_pca(p, &mut problems));
        let model = check_model::plan_model(&config, &base, &facts, &mut problems);
        let contextual_ok = check_contextual::check_contextual(&config, &mut problems);
        let output_dir = output_dir(&config, file, overrides);
        if facts.output_is_file {
            problems.add("output.dir", format!("{} is a file, not a folder", output_dir.display()));
        }
        let keep_runs = config.output.keep_runs.unwrap_or(5);
        if keep_runs == 0 {
            problems.add("output.keep_runs", "must be at least 1 (the run just made is always kept)");
        }
        let max_memory = check_max_memory(&config, &mut problems);
        let cache = check_cache(&config, &base, &output_dir, overrides, &mut problems);
        let senses = check_eval::plan_senses(&config, &base, &facts, &mut problems);
        let documents = check_eval::plan_documents(&config, &base, &facts, &mut problems);
        let finetune_ok = check_finetune::check_finetune(&config, &base, &facts, &mut problems);
        problems.into_result(file)?;
        let finetune = match (finetune_ok, &config.finetune, facts.finetune_model) {
            (Some(pairs), Some(f), Some(folder)) => Some(finetune_plan(&config, f, folder?, pairs)?),
            (Some(_), Some(_), None) => {
                return Err(Error::Internal("the fine-tuning model folder was not read before planning".into()))
            }
            _ => None,
        };
        // The model folder (read before planning) is used only now, so that every problem of the config comes
        // first; a missing or broken folder is an input error (exit 3), named before any work.
        let contextual = match (contextual_ok, &config.contextual, facts.model) {
            (true, Some(c), Some(folder)) => {
                let planned = contextual_plan(c, folder?)?;
                let cache = match (&planned.words, &senses) {
                    _ if cache.is_err() => cache,
                    (Some(_), _) | (_, Some(_)) => Err(
                        "contextual.words and eval.senses need every document's hidden states, which the cache does not keep"
                            .to_owned(),
                    ),
                    _ => cache,
                };
                Some(ContextualPlan { senses, cache, ..planned })
            }
            (true, Some(_), None) => {
                return Err(Error::Internal("the model folder was not read before planning".into()))
            }
            _ => None,
        };
        Ok(Plan {
            config_file: file.to_owned(),
            job_name,
            seed: config.job.seed,
            backend: overrides.backend.unwrap_or(config.job.backend),
            input: input.ok_or_else(|| Error::Internal("input plan missing without a problem".into()))?,
            bow,
            pca,
            model,
            contextual,
            finetune,
            documents,
            output_dir,
            keep_runs: keep_runs as usize,
            handoff: config.output.handoff.unwrap_or(true),
            plots: config.output.plots.unwrap_or(true),
            max_memory,
            config,
        })
    }

    /// The label files of the run's evaluations: items' (`eval.labels` of a model job) and documents' (`eval.labels`
    /// of a text job, by row id); each `None` when not configured.
    pub fn label_files(&self) -> (Option<&LabelsFile>, Option<&LabelsFile>) {
        (self.model.as_ref().and_then(|m| m.labels.as_ref()), self.documents.as_ref().and_then(|d| d.labels.as_ref()))
    }
}

/// The encoder cache: `output.cache_dir` (default `<output dir>/cache`) and `output.cache_keep_days` (default 30),
/// or why the run goes without it (`contextual.cache = false`, `--no-cache`).
fn check_cache(
    config: &Config,
    base: &Path,
    output_dir: &Path,
    overrides: &Overrides,
    problems: &mut Problems,
) -> std::result::Result<CachePlan, String> {
    let keep_days = config.output.cache_keep_days.unwrap_or(30);
    if keep_days == 0 {
        problems.add("output.cache_keep_days", "must be at least 1");
    }
    if config.output.cache_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
        problems.add("output.cache_dir", "must name a folder");
    }
    if overrides.no_cache {
        return Err("--no-cache".to_owned());
    }
    if config.contextual.as_ref().is_some_and(|c| !c.cache) {
        return Err("contextual.cache = false".to_owned());
    }
    let dir = match &config.output.cache_dir {
        Some(d) => base.join(d),
        None => output_dir.join("cache"),
    };
    Ok(CachePlan { dir, keep_days })
}

/// `job.name`, trimmed: not empty, no path separator, not hidden.
fn check_job(config: &Config, problems: &mut Problems) -> String {
    let job_name = config.job.name.trim().to_owned();
    if job_name.is_empty() {
        problems.add("job.name", "must not be empty");
    } else if job_name.contains(['/', '\\']) || job_name.starts_with('.') {
        problems.add("job.name", format!("'{job_name}' must not contain a path separator or start with '.'"));
    }
    job_name
}

/// `job.max_memory` in bytes: a positive integer or a size such as "4GiB".
fn check_max_memory(config: &Config, problems: &mut Problems) -> Option<u64> {
    let v = config.job.max_memory.as_ref()?;
    let parsed = match v {
        toml::Value::Integer(i) if *i > 0 => Some(*i as u64),
        toml::Value::String(s) => crate::runtime::memory::parse_size(s),
        _ => None,
    };
    if parsed.is_none() {
        problems.add("job.max_memory", format!("{v} is not a size (bytes, or e.g. \"4GiB\", \"500MB\")"));
    }
    parsed
}
