//! A [`Config`] checked and resolved into what a run does. Every problem is collected with its key path before any
//! work starts, so `embjob validate` can list them all at once.

pub mod config;

use std::path::{Path, PathBuf};

use crate::text::bow::BowParams;
use crate::plan::config::{
    BackendChoice, BowConfig, ComponentsSpec, Config, DfBound, EmbeddingDim, EmbeddingInit, EvalConfig, Format, Layout,
    Optimizer, PcaConfig, PcaSolver, Pooling,
};
use crate::error::{ConfigProblem, Error, Result};

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
    pub input: InputPlan,
    /// Bag-of-words options; `None` for the numeric layout.
    pub bow: Option<BowParams>,
    pub pca: Option<PcaPlan>,
    /// The embedding model with its training and evaluation options.
    pub model: Option<ModelPlan>,
    /// Contextual document vectors from a pretrained encoder (the model folder already read and checked).
    pub contextual: Option<ContextualPlan>,
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

/// Which file or files to read and how.
#[derive(Debug, Clone)]
pub struct InputPlan {
    /// As configured (resolved against the pipeline's folder): a file, a folder or a glob.
    pub path: PathBuf,
    pub format: Format,
    pub columns: InputColumns,
    pub separator: u8,
    /// The files it names, in the order they are read (sorted by path); one for a plain file.
    pub files: Vec<PathBuf>,
    /// The folder hive partitions (`key=value` folders) are read below: a folder input, or a glob's fixed prefix.
    pub root: PathBuf,
}

impl InputPlan {
    /// One file.
    pub fn file(path: PathBuf, format: Format, columns: InputColumns, separator: u8) -> InputPlan {
        InputPlan {
            files: vec![path.clone()],
            root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            path,
            format,
            columns,
            separator,
        }
    }

    /// Whether the input is more than one plain file (a folder or a glob).
    pub fn is_many(&self) -> bool {
        self.files.len() != 1 || self.files[0] != self.path
    }
}

/// The files a folder or glob names: data files (`.parquet`, `.pq`, `.csv`, `.tsv`, `.txt`), sorted by path,
/// skipping names that start with `.` or `_` (`_SUCCESS`, `.crc` files as Spark writes them); and the folder hive
/// partitions are counted from.
pub fn input_files(path: &Path) -> std::result::Result<(Vec<PathBuf>, PathBuf), String> {
    let data = |p: &Path| {
        let visible =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.') && !n.starts_with('_'));
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        visible && matches!(ext.as_deref(), Some("parquet" | "pq" | "csv" | "tsv" | "txt"))
    };
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        let entries = glob::glob(&text).map_err(|e| format!("not a valid glob: {e}"))?;
        let mut files: Vec<PathBuf> = entries.filter_map(std::result::Result::ok).filter(|p| p.is_file()).collect();
        files.sort();
        // The fixed folder before the first wildcard.
        let mut root = PathBuf::new();
        for c in path.components() {
            if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                break;
            }
            root.push(c);
        }
        return Ok((files, root));
    }
    if path.is_dir() {
        let mut files = Vec::new();
        let mut stack = vec![path.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            for e in entries.flatten() {
                let p = e.path();
                let hidden =
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.') || n.starts_with('_'));
                if p.is_dir() && !hidden {
                    stack.push(p);
                } else if p.is_file() && data(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        return Ok((files, path.to_path_buf()));
    }
    Ok((vec![path.to_path_buf()], path.parent().map(Path::to_path_buf).unwrap_or_default()))
}

/// The columns to read, by layout.
#[derive(Debug, Clone, PartialEq)]
pub enum InputColumns {
    Long {
        user: String,
        item: String,
        order: Option<String>,
        weight: Option<String>,
    },
    List {
        user: String,
        items: String,
    },
    Text {
        text: String,
        id: Option<String>,
    },
    /// `columns: None` means every numeric column but the id and `exclude`.
    Numeric {
        columns: Option<Vec<String>>,
        id: Option<String>,
        exclude: Vec<String>,
    },
}

/// PCA options.
#[derive(Debug, Clone)]
pub struct PcaPlan {
    pub n_components: ComponentsSpec,
    pub whiten: bool,
    pub standardize: bool,
    pub solver: PcaSolver,
    pub oversamples: usize,
    pub power_iterations: Option<usize>,
}

impl PcaPlan {
    /// The fit's parameters for a `rows` × `cols` input: the component count checked against the rank bound and
    /// `auto` resolved to a solver (with the reason run.json records). The one place `auto` is decided.
    pub fn resolve(&self, rows: usize, cols: usize) -> Result<crate::pca::PcaParams> {
        use crate::pca::{choose_solver, Components, Solver};
        let rank_bound = rows.min(cols);
        let components = match self.n_components {
            ComponentsSpec::Count(k) => {
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                if k > rank_bound {
                    return Err(Error::Stage {
                        stage: "pca",
                        message: format!(
                            "pca.n_components = {k} is more than min(rows, features) = min({rows}, {cols}) = {rank_bound}"
                        ),
                    });
                }
                Components::Count(k)
            }
            ComponentsSpec::VarianceFraction(f) => Components::VarianceFraction(f),
        };
        let requested = match self.solver {
            PcaSolver::Auto => None,
            PcaSolver::Covariance => Some(Solver::Covariance),
            PcaSolver::Gram => Some(Solver::Gram),
            PcaSolver::Randomized => Some(Solver::Randomized),
            PcaSolver::Lanczos => Some(Solver::Lanczos),
        };
        let wanted = match components {
            Components::Count(k) => Some(k),
            Components::VarianceFraction(_) => None,
        };
        let (solver, solver_reason) = choose_solver(requested, rows, cols, wanted);
        Ok(crate::pca::PcaParams {
            components,
            whiten: self.whiten,
            standardize: self.standardize,
            solver,
            solver_reason,
            oversamples: self.oversamples,
            power_iterations: self.power_iterations.unwrap_or(crate::pca::DEFAULT_POWER_ITERATIONS),
        })
    }
}

/// The embedding-layer model, its training and its evaluation.
#[derive(Debug, Clone)]
pub struct ModelPlan {
    pub loss: crate::recommend::sampling::Loss,
    /// Negatives per batch (sampled softmax).
    pub negatives: usize,
    pub sampler: crate::recommend::sampling::Sampler,
    pub embedding_dim: EmbeddingDim,
    pub hidden_units: usize,
    pub pooling: Pooling,
    pub inputs_per_example: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub init: EmbeddingInit,
    pub train_seed: u64,
    pub patience: Option<usize>,
    pub ks: Vec<usize>,
    pub neighbors: usize,
    pub test_fraction: f64,
    pub split_seed: u64,
    pub labels: Option<LabelsPlan>,
    /// Item pairs with human similarity scores (item_a, item_b, score).
    pub pairs: Option<(PathBuf, Format)>,
}

impl ModelPlan {
    /// The embedding width d for `items` items: as configured, or for `auto` round(items^0.25) (at least 1).
    pub fn embedding_dim_for(&self, items: usize) -> usize {
        match self.embedding_dim {
            EmbeddingDim::Fixed(d) => usize::try_from(d).unwrap_or(usize::MAX),
            EmbeddingDim::Auto => ((items as f64).powf(0.25).round() as usize).max(1),
        }
    }
}

/// The contextual stage, resolved against its model folder.
#[derive(Debug, Clone)]
pub struct ContextualPlan {
    pub folder: crate::encoder::ModelFolder,
    pub pooling: crate::backend::PoolMode,
    pub normalize: bool,
    pub max_tokens: usize,
    pub truncate: bool,
    pub batch_tokens: usize,
    /// Word vectors to write (`token_embeddings.parquet`), if any.
    pub words: Option<WordsPlan>,
    /// `eval.senses`: sentences with an ambiguous word and its sense, evaluated on the word vectors.
    pub senses: Option<(PathBuf, Format)>,
}

/// Which word occurrences the contextual stage writes, at which hidden states.
#[derive(Debug, Clone)]
pub struct WordsPlan {
    /// Lowercased words to match; `None`: every word, up to `limit` occurrences.
    pub only: Option<Vec<String>>,
    pub limit: usize,
    /// Hidden states, ascending (0: the embeddings' output, l: after layer l).
    pub layers: Vec<usize>,
    /// Also the word-piece embedding rows alone (the static control).
    pub static_control: bool,
}

/// The document evaluation of a text job: every document vector the job makes (bag-of-words rows, PCA
/// projections, contextual vectors), its cosine neighbours and, with labels, how well they predict the category.
#[derive(Debug, Clone)]
pub struct DocEvalPlan {
    /// Neighbours per document (`eval.neighbors`).
    pub neighbors: usize,
    /// Row id → category (`item` holds the row-id column).
    pub labels: Option<LabelsPlan>,
}

/// An item (or, for documents, row id) → category file for the similarity evaluation.
#[derive(Debug, Clone)]
pub struct LabelsPlan {
    pub path: PathBuf,
    pub format: Format,
    pub item: String,
    pub category: String,
}

/// Overrides from the command line, applied before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<BackendChoice>,
    /// Replaces `output.dir` (relative to the current directory, as command-line paths are).
    pub output_dir: Option<PathBuf>,
}

impl Plan {
    /// The stages this job runs, in order.
    pub fn stages(&self) -> Vec<crate::stages::Stage> {
        use crate::stages::Stage;
        let mut stages = vec![Stage::Ingest];
        if self.bow.is_some() {
            stages.push(Stage::Bow);
        }
        if self.pca.is_some() {
            stages.push(Stage::Pca);
        }
        if self.model.is_some() {
            stages.push(Stage::Model);
        }
        if self.contextual.is_some() {
            stages.push(Stage::Contextual);
        }
        if self.documents.is_some() {
            stages.push(Stage::Documents);
        }
        stages
    }

    /// Reads, parses and validates a pipeline file.
    pub fn load(file: &Path, overrides: &Overrides) -> Result<Plan> {
        let config = Config::from_file(file)?;
        Plan::from_config(config, file, overrides)
    }

    /// Validates a parsed config; `file` locates relative paths.
    pub fn from_config(config: Config, file: &Path, overrides: &Overrides) -> Result<Plan> {
        let mut problems = Problems::default();
        let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };

        let job_name = config.job.name.trim().to_owned();
        if job_name.is_empty() {
            problems.add("job.name", "must not be empty");
        } else if job_name.contains(['/', '\\']) || job_name.starts_with('.') {
            problems.add("job.name", format!("'{job_name}' must not contain a path separator or start with '.'"));
        }

        let input = plan_input(&config, &base, &mut problems);
        let bow = match (&config.bow, config.input.layout) {
            (Some(_), Layout::Numeric) => {
                problems.add("bow", "the numeric layout has no documents to tokenize; remove [bow]");
                None
            }
            (None, Layout::Numeric) => None,
            (bow, _) => plan_bow(bow.clone().unwrap_or_default(), &mut problems),
        };
        let pca = config.pca.as_ref().and_then(|p| plan_pca(p, &mut problems));
        let model = plan_model(&config, &base, &mut problems);
        let contextual = check_contextual(&config, &mut problems);

        let output_dir = match (&overrides.output_dir, &config.output.dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => base.join(dir),
            (None, None) => base.join("out").join(&job_name),
        };
        if output_dir.is_file() {
            problems.add("output.dir", format!("{} is a file, not a folder", output_dir.display()));
        }
        let keep_runs = config.output.keep_runs.unwrap_or(5);
        if keep_runs == 0 {
            problems.add("output.keep_runs", "must be at least 1 (the run just made is always kept)");
        }

        let max_memory = match &config.job.max_memory {
            None => None,
            Some(v) => {
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
        };
        let senses = plan_senses(&config, &base, &mut problems);
        let documents = plan_documents(&config, &base, &mut problems);
        problems.into_result(file)?;
        // The model folder is read now, so that `validate` names a missing or broken one before any work (exit 3).
        let contextual = match (contextual, &config.contextual) {
            (Some(()), Some(c)) => {
                let mut p = plan_contextual(c, &base)?;
                p.senses = senses;
                Some(p)
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
            documents,
            output_dir,
            keep_runs: keep_runs as usize,
            handoff: config.output.handoff.unwrap_or(true),
            plots: config.output.plots.unwrap_or(true),
            max_memory,
            config,
        })
    }
}

#[derive(Default)]
struct Problems(Vec<ConfigProblem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem { key: key.to_owned(), message: message.into() });
    }
    fn into_result(self, file: &Path) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::ConfigInvalid { file: file.to_owned(), problems: self.0 })
        }
    }
}

fn plan_input(config: &Config, base: &Path, problems: &mut Problems) -> Option<InputPlan> {
    let input = &config.input;
    let path = base.join(&input.path);
    let mut ok = true;
    let (files, root) = match input_files(&path) {
        Ok(found) => found,
        Err(message) => {
            problems.add("input.path", message);
            (Vec::new(), PathBuf::new())
        }
    };
    let many = path.is_dir() || path.to_string_lossy().contains(['*', '?', '[']);
    if files.is_empty() {
        problems.add("input.path", format!("no data files (.parquet, .csv) in {}", path.display()));
        ok = false;
    } else if !many && !path.exists() {
        problems.add("input.path", format!("file not found: {}", path.display()));
        ok = false;
    }
    let first = files.first().cloned().unwrap_or_else(|| path.clone());
    let format = match input.format {
        Some(f) => Some(f),
        None => match first.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") | Some("tsv") | Some("txt") => Some(Format::Csv),
            Some("parquet") | Some("pq") => Some(Format::Parquet),
            _ => {
                problems.add(
                    "input.format",
                    format!(
                        "cannot tell the format of {} from its extension; set \"csv\" or \"parquet\"",
                        first.display()
                    ),
                );
                None
            }
        },
    };
    let separator = match input.separator.as_deref() {
        None => b',',
        Some(s) if s.len() == 1 && s.is_ascii() => s.as_bytes()[0],
        Some("\\t") => b'\t',
        Some(s) => {
            problems.add("input.separator", format!("must be one ASCII character (got {s:?})"));
            ok = false;
            b','
        }
    };
    if input.separator.is_some() && format == Some(Format::Parquet) {
        problems.add("input.separator", "only applies to CSV input");
    }

    // Keys that do not apply to the layout are mistakes, not silently ignored.
    let layout_name = format!("{:?}", input.layout).to_lowercase();
    let mut unused = |key: &str, set: bool| {
        if set {
            problems.add(&format!("input.{key}"), format!("not used with layout \"{layout_name}\""));
            ok = false;
        }
    };
    let columns = match input.layout {
        Layout::Long => {
            unused("text", input.text.is_some());
            unused("id", input.id.is_some());
            unused("columns", input.columns.is_some());
            unused("exclude", input.exclude.is_some());
            InputColumns::Long {
                user: input.user.clone().unwrap_or_else(|| "user".into()),
                item: input.item.clone().unwrap_or_else(|| "item".into()),
                order: input.order.clone(),
                weight: input.weight.clone(),
            }
        }
        Layout::List => {
            unused("text", input.text.is_some());
            unused("id", input.id.is_some());
            unused("columns", input.columns.is_some());
            unused("order", input.order.is_some());
            unused("exclude", input.exclude.is_some());
            unused("weight", input.weight.is_some());
            InputColumns::List {
                user: input.user.clone().unwrap_or_else(|| "user".into()),
                items: input.item.clone().unwrap_or_else(|| "items".into()),
            }
        }
        Layout::Text => {
            unused("user", input.user.is_some());
            unused("item", input.item.is_some());
            unused("order", input.order.is_some());
            unused("columns", input.columns.is_some());
            unused("exclude", input.exclude.is_some());
            unused("weight", input.weight.is_some());
            InputColumns::Text { text: input.text.clone().unwrap_or_else(|| "text".into()), id: input.id.clone() }
        }
        Layout::Numeric => {
            unused("user", input.user.is_some());
            unused("item", input.item.is_some());
            unused("order", input.order.is_some());
            unused("text", input.text.is_some());
            unused("weight", input.weight.is_some());
            if let Some(cols) = &input.columns {
                if cols.is_empty() {
                    problems.add("input.columns", "must name at least one column");
                    ok = false;
                }
                let mut seen = std::collections::HashSet::new();
                for c in cols {
                    if !seen.insert(c) {
                        problems.add("input.columns", format!("column '{c}' is listed twice"));
                        ok = false;
                    }
                }
            }
            if input.columns.is_some() && input.exclude.is_some() {
                problems.add("input.exclude", "give either input.columns or input.exclude, not both");
                ok = false;
            }
            InputColumns::Numeric {
                columns: input.columns.clone(),
                id: input.id.clone(),
                exclude: input.exclude.clone().unwrap_or_default(),
            }
        }
    };
    // Every file of a folder or glob in the one format.
    if let (true, Some(f)) = (many, format) {
        let wanted: &[&str] = match f {
            Format::Csv => &["csv", "tsv", "txt"],
            Format::Parquet => &["parquet", "pq"],
        };
        if let Some(odd) = files.iter().find(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
            !wanted.contains(&ext.as_str())
        }) {
            problems.add(
                "input.path",
                format!("{} is not {f:?} like the other files (one format per input)", odd.display()),
            );
            ok = false;
        }
    }
    match (ok, format) {
        (true, Some(format)) => Some(InputPlan { path, format, columns, separator, files, root }),
        _ => None,
    }
}

fn plan_bow(bow: BowConfig, problems: &mut Problems) -> Option<BowParams> {
    let token_pattern = match crate::text::token_pattern::TokenPattern::new(&bow.token_pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            problems.add("bow.token_pattern", format!("not a valid regular expression: {e}"));
            None
        }
    };
    let mut ok = token_pattern.is_some();
    match (bow.min_df, bow.max_df) {
        (DfBound::Count(lo), DfBound::Count(hi)) if lo > hi => {
            problems.add("bow.min_df", format!("min_df ({lo}) is above max_df ({hi})"));
            ok = false;
        }
        (DfBound::Fraction(lo), DfBound::Fraction(hi)) if lo > hi => {
            problems.add("bow.min_df", format!("min_df ({lo}) is above max_df ({hi})"));
            ok = false;
        }
        _ => {}
    }
    if bow.max_df == DfBound::Count(0) || bow.max_df == DfBound::Fraction(0.0) {
        problems.add("bow.max_df", "0 would remove every token");
        ok = false;
    }
    if bow.max_features == Some(0) {
        problems.add("bow.max_features", "must be at least 1 (leave it out for no limit)");
        ok = false;
    }
    let max_features = bow.max_features.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    if !ok {
        return None;
    }
    Some(BowParams {
        lowercase: bow.lowercase,
        token_pattern: token_pattern?,
        stop_words: bow.stop_words,
        min_df: bow.min_df,
        max_df: bow.max_df,
        max_features,
        weighting: bow.weighting,
    })
}

fn plan_pca(pca: &PcaConfig, problems: &mut Problems) -> Option<PcaPlan> {
    let mut ok = true;
    if pca.solver != PcaSolver::Randomized {
        if pca.oversamples.is_some() {
            problems.add("pca.oversamples", "only applies to solver = \"randomized\"");
            ok = false;
        }
        if pca.power_iterations.is_some() {
            problems.add("pca.power_iterations", "only applies to solver = \"randomized\"");
            ok = false;
        }
    }
    if matches!(pca.solver, PcaSolver::Randomized | PcaSolver::Lanczos) {
        if let ComponentsSpec::VarianceFraction(_) = pca.n_components {
            let solver = if pca.solver == PcaSolver::Lanczos { "lanczos" } else { "randomized" };
            problems.add(
                "pca.n_components",
                format!("a variance fraction needs every eigenvalue; use an integer with solver = \"{solver}\""),
            );
            ok = false;
        }
    }
    if pca.power_iterations.is_some_and(|p| p > 100) {
        problems.add("pca.power_iterations", "more than 100 power iterations gain nothing; use at most 100");
        ok = false;
    }
    if pca.oversamples.is_some_and(|p| p > 10_000) {
        problems.add("pca.oversamples", "must be at most 10000");
        ok = false;
    }
    ok.then(|| PcaPlan {
        n_components: pca.n_components,
        whiten: pca.whiten,
        standardize: pca.standardize,
        solver: pca.solver,
        oversamples: pca.oversamples.unwrap_or(10) as usize,
        power_iterations: pca.power_iterations.map(|p| p as usize),
    })
}

fn format_of(path: &Path) -> Option<Format> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") | Some("tsv") | Some("txt") => Some(Format::Csv),
        Some("parquet") | Some("pq") => Some(Format::Parquet),
        _ => None,
    }
}

/// The keys of `[contextual]` that need no model folder to check.
fn check_contextual(config: &Config, problems: &mut Problems) -> Option<()> {
    let c = config.contextual.as_ref()?;
    let before = problems.0.len();
    if config.input.layout != Layout::Text {
        problems.add("contextual", "contextual embeddings need documents: input.layout = \"text\"");
    }
    if c.model.trim().is_empty() {
        problems.add("contextual.model", "must name a model folder");
    }
    if c.max_tokens == Some(0) || c.max_tokens.is_some_and(|m| m > crate::backend::gpu::MAX_SEQ as u64) {
        problems.add("contextual.max_tokens", format!("must be between 1 and {}", crate::backend::gpu::MAX_SEQ));
    }
    if c.batch_tokens == 0 || c.batch_tokens > 1 << 24 {
        problems.add("contextual.batch_tokens", "must be between 1 and 16777216");
    }
    match &c.words {
        Some(crate::plan::config::WordsChoice::Named(w)) if w != "all" => {
            problems.add("contextual.words", format!("expected a list of words or \"all\", found \"{w}\""))
        }
        Some(crate::plan::config::WordsChoice::List(v)) if v.is_empty() || v.iter().any(|w| w.trim().is_empty()) => {
            problems.add("contextual.words", "must list at least one word, none empty")
        }
        _ => {}
    }
    if c.words_limit == 0 {
        problems.add("contextual.words_limit", "must be at least 1");
    }
    if c.words.is_none() && (c.layers.is_some() || !c.static_control) {
        problems.add("contextual.layers", "layers and static choose what contextual.words writes: set words too");
    }
    (problems.0.len() == before).then_some(())
}

/// `[contextual]` against its model folder: the folder's defaults for `auto`, `max_tokens` within the model's.
pub(crate) fn plan_contextual(c: &crate::plan::config::ContextualConfig, base: &Path) -> Result<ContextualPlan> {
    use crate::backend::PoolMode;
    use crate::plan::config::{AutoBool, PoolingChoice};
    let dir = base.join(&c.model);
    let folder = crate::encoder::ModelFolder::open(&dir)?;
    let model_max = folder.config.max_tokens().min(crate::backend::gpu::MAX_SEQ);
    let max_tokens = match c.max_tokens {
        Some(m) => {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            if m > model_max {
                return Err(Error::input(
                    dir.join("config.json"),
                    None,
                    format!("contextual.max_tokens = {m} is more than the model takes ({model_max})"),
                ));
            }
            m
        }
        None => folder.max_seq_length.unwrap_or(model_max).min(model_max),
    };
    let pooling = match c.pooling {
        PoolingChoice::Auto => folder.pooling.unwrap_or(PoolMode::Mean),
        PoolingChoice::Mean => PoolMode::Mean,
        PoolingChoice::Cls => PoolMode::Cls,
        PoolingChoice::Max => PoolMode::Max,
    };
    let normalize = match c.normalize {
        AutoBool::Auto => folder.normalize,
        AutoBool::Set(b) => b,
    };
    let batch_tokens = usize::try_from(c.batch_tokens).unwrap_or(usize::MAX).max(max_tokens);
    let layer_count = folder.config.layers;
    let words = match &c.words {
        None => None,
        Some(choice) => {
            let mut layers: Vec<usize> = match &c.layers {
                None => (0..=layer_count).collect(),
                Some(v) => v.iter().map(|&l| usize::try_from(l).unwrap_or(usize::MAX)).collect(),
            };
            if let Some(&bad) = layers.iter().find(|&&l| l > layer_count) {
                return Err(Error::input(
                    dir.join("config.json"),
                    None,
                    format!("contextual.layers: {bad} is not a hidden state of this {layer_count}-layer model (0 to {layer_count})"),
                ));
            }
            layers.sort_unstable();
            layers.dedup();
            let only = match choice {
                crate::plan::config::WordsChoice::List(v) => Some(v.iter().map(|w| w.trim().to_lowercase()).collect()),
                crate::plan::config::WordsChoice::Named(_) => None,
            };
            Some(WordsPlan {
                only,
                limit: usize::try_from(c.words_limit).unwrap_or(usize::MAX),
                layers,
                static_control: c.static_control,
            })
        }
    };
    Ok(ContextualPlan {
        folder,
        pooling,
        normalize,
        max_tokens,
        truncate: c.truncate,
        batch_tokens,
        words,
        senses: None,
    })
}

/// `eval.labels`: an existing CSV or Parquet file with a `key` column (items, or documents' row ids) and
/// `eval.labels_category`.
fn plan_labels(eval: &EvalConfig, base: &Path, key: &str, problems: &mut Problems) -> Option<LabelsPlan> {
    let Some(p) = &eval.labels else {
        if eval.labels_item.is_some() || eval.labels_row.is_some() || eval.labels_category.is_some() {
            problems.add("eval.labels", "labels_item / labels_row / labels_category need eval.labels");
        }
        return None;
    };
    let path = base.join(p);
    let format = format_of(&path);
    if !path.is_file() {
        problems.add("eval.labels", format!("file not found: {}", path.display()));
    } else if format.is_none() {
        problems.add("eval.labels", format!("cannot tell the format of {} (use .csv or .parquet)", path.display()));
    }
    format.map(|format| LabelsPlan {
        path,
        format,
        item: key.to_owned(),
        category: eval.labels_category.clone().unwrap_or_else(|| "category".into()),
    })
}

/// `[eval]` in a text job: the document evaluation, its labels keyed by `eval.labels_row` (default: the input's id
/// column name, else "id").
fn plan_documents(config: &Config, base: &Path, problems: &mut Problems) -> Option<DocEvalPlan> {
    let eval = config.eval.as_ref()?;
    if config.input.layout != Layout::Text || config.model.is_some() {
        return None;
    }
    if eval.neighbors == 0 || eval.neighbors > 1000 {
        problems.add("eval.neighbors", "must be between 1 and 1000");
    }
    let key = eval.labels_row.clone().or_else(|| config.input.id.clone()).unwrap_or_else(|| "id".into());
    let labels = plan_labels(eval, base, &key, problems);
    Some(DocEvalPlan { neighbors: eval.neighbors as usize, labels })
}

/// `eval.senses`: an existing CSV or Parquet file, and a `[contextual]` stage to evaluate.
fn plan_senses(config: &Config, base: &Path, problems: &mut Problems) -> Option<(PathBuf, Format)> {
    let p = config.eval.as_ref()?.senses.as_ref()?;
    let path = base.join(p);
    if config.contextual.is_none() {
        problems.add("eval.senses", "the sense evaluation needs a [contextual] section");
        return None;
    }
    match (path.is_file(), format_of(&path)) {
        (true, Some(f)) => Some((path, f)),
        (false, _) => {
            problems.add("eval.senses", format!("file not found: {}", path.display()));
            None
        }
        (true, None) => {
            problems.add("eval.senses", format!("cannot tell the format of {} (use .csv or .parquet)", path.display()));
            None
        }
    }
}

fn plan_model(config: &Config, base: &Path, problems: &mut Problems) -> Option<ModelPlan> {
    let Some(model) = &config.model else {
        if config.train.is_some() {
            problems.add("train", "[train] needs a [model] section");
        }
        // [eval] without [model] evaluates a text input's documents (plan_documents) and word senses.
        if let Some(e) = &config.eval {
            if config.input.layout != Layout::Text {
                problems.add("eval", "[eval] needs a [model] section (or a text input, whose documents it evaluates)");
            } else {
                if e.pairs.is_some() {
                    problems
                        .add("eval.pairs", "item pairs need a [model] section; a text job has documents, not items");
                }
                if e.labels_item.is_some() {
                    problems.add("eval.labels_item", "a text job's documents are labelled by row: use eval.labels_row");
                }
            }
        }
        return None;
    };
    let before = problems.0.len();
    if !matches!(config.input.layout, Layout::Long | Layout::List) {
        problems.add("model", "the embedding model needs users and items: input.layout = \"long\" or \"list\"");
    }
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
    let train = config.train.clone().unwrap_or_default();
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
    let sampled = model.loss == crate::recommend::sampling::Loss::SampledSoftmax;
    if !sampled {
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
    if sampled && train.optimizer != Optimizer::Adam {
        problems.add(
            "train.optimizer",
            "the sampled softmax trains with lazy Adam (only the batch's rows and columns move): use \"adam\"",
        );
    }
    let eval: EvalConfig = config.eval.clone().unwrap_or_default();
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
    let labels = plan_labels(&eval, base, eval.labels_item.as_deref().unwrap_or("item"), problems);
    let pairs = match &eval.pairs {
        None => None,
        Some(p) => {
            let path = base.join(p);
            match (path.is_file(), format_of(&path)) {
                (true, Some(f)) => Some((path, f)),
                (false, _) => {
                    problems.add("eval.pairs", format!("file not found: {}", path.display()));
                    None
                }
                (true, None) => {
                    problems.add(
                        "eval.pairs",
                        format!("cannot tell the format of {} (use .csv or .parquet)", path.display()),
                    );
                    None
                }
            }
        }
    };
    if problems.0.len() > before {
        return None;
    }
    Some(ModelPlan {
        loss: model.loss,
        negatives: model.negatives.unwrap_or(1000) as usize,
        sampler: model.sampler.unwrap_or_default(),
        embedding_dim: model.embedding_dim,
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
        labels,
        pairs,
    })
}
