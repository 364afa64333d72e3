//! Runs a validated [`Plan`]: ingest, bag-of-words, the configured stages, then writes every output into a staging
//! folder that becomes visible (`latest`) only when all of it is written.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::backend::{self, Backend, BackendReport};
use crate::bow::{self, Bow};
use crate::data;
use crate::dataset::Dataset;
use crate::dense::Matrix;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::outputs;
use crate::outputs::FeatureKind;
use crate::pca::{self, PcaInput};
use crate::plan::Plan;
use crate::report::Reporter;
use crate::run_dir::{self, Staging};
use crate::run_record::{self, OutputRecord, RunRecord, StageRecord, Versions};
use crate::table::Table;
use crate::train;

/// What a finished run reports back.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_id: String,
    /// The run's folder under `runs/`.
    pub run_dir: PathBuf,
    pub backend: BackendReport,
    pub metrics: Metrics,
    pub stages: Vec<StageRecord>,
}

/// Collects stage timings and tells the reporter.
struct Stages<'r> {
    reporter: &'r dyn Reporter,
    records: Vec<StageRecord>,
}

impl Stages<'_> {
    fn run<T>(&mut self, stage: &str, total: Option<u64>, f: impl FnOnce() -> Result<(T, String)>) -> Result<T> {
        crate::interrupt::check()?;
        self.reporter.stage_started(stage, total);
        let t = Instant::now();
        let (value, summary) = f()?;
        let seconds = t.elapsed().as_secs_f64();
        self.reporter.stage_finished(stage, &summary, seconds);
        self.records.push(StageRecord { stage: stage.to_owned(), seconds, summary });
        Ok(value)
    }
}

/// Runs the whole job. On error nothing of this run is visible and earlier runs are untouched.
pub fn run(plan: &Plan, reporter: &dyn Reporter) -> Result<RunSummary> {
    let started = SystemTime::now();
    let (compute, backend) = backend::open(plan.backend)?;
    if plan.backend == crate::config::BackendChoice::Auto {
        reporter.notice(&format!("backend: {}", backend.reason));
    }
    let compute: &dyn Backend = compute.as_ref();
    let staging = Staging::create(&plan.output_dir)?;
    let mut stages = Stages { reporter, records: Vec::new() };
    let mut metrics = Metrics::default();
    let mut tables: Vec<(&str, Table)> = Vec::new();

    let (dataset, fingerprint) = stages.run("ingest", None, || {
        let fingerprint = run_record::fingerprint(&plan.input.path)?;
        let dataset = data::read_input(&plan.input)?;
        let summary = match &dataset {
            Dataset::Interactions(i) => format!(
                "{} users, {} items, {} interactions",
                i.users.len(),
                i.items.len(),
                i.lists.iter().map(Vec::len).sum::<usize>()
            ),
            Dataset::Text(t) => format!("{} documents", t.texts.len()),
            Dataset::Numeric(n) => format!("{} rows × {} columns", n.rows, n.columns.len()),
        };
        Ok(((dataset, fingerprint), summary))
    })?;
    metrics.push("ingest", "rows", dataset.rows() as f64);
    if let Dataset::Interactions(i) = &dataset {
        metrics.push("ingest", "items", i.items.len() as f64);
        metrics.push("ingest", "interactions", i.lists.iter().map(Vec::len).sum::<usize>() as f64);
    }

    let bow: Option<Bow> = match &plan.bow {
        None => None,
        Some(bow_plan) => Some(stages.run("bow", None, || {
            let bow = match &dataset {
                Dataset::Interactions(i) => bow::from_token_ids(bow_plan, i.items.clone(), &i.lists)?,
                Dataset::Text(t) => bow::from_texts(bow_plan, &t.texts)?,
                Dataset::Numeric(_) => {
                    return Err(crate::Error::Internal("a bow stage was planned for numeric input".into()))
                }
            };
            let summary = format!(
                "{} documents × {} tokens, {} non-zeros ({} tokens pruned)",
                bow.matrix.rows,
                bow.matrix.cols,
                bow.matrix.nnz(),
                bow.stats.pruned_by_df + bow.stats.pruned_by_max_features
            );
            Ok((bow, summary))
        })?),
    };
    if let Some(bow) = &bow {
        let s = bow.stats;
        metrics.push("bow", "documents", s.documents as f64);
        metrics.push("bow", "vocabulary_size", bow.tokens.len() as f64);
        metrics.push("bow", "nnz", bow.matrix.nnz() as f64);
        metrics.push("bow", "tokens_seen", s.tokens_seen as f64);
        metrics.push("bow", "pruned_by_df", s.pruned_by_df as f64);
        metrics.push("bow", "pruned_by_max_features", s.pruned_by_max_features as f64);
        metrics.push("bow", "stop_words_dropped", s.stop_words_dropped as f64);
        metrics.push("bow", "empty_documents", s.empty_documents as f64);
        tables.push(("vocabulary.parquet", outputs::vocabulary(bow)));
        tables.push(("bow.parquet", outputs::bow_entries(bow, dataset.row_ids())));
    }

    let mut details = serde_json::Map::new();
    if let Some(pca_plan) = &plan.pca {
        let (input, names, kind) = match (&bow, &dataset) {
            (Some(bow), _) => (PcaInput::Sparse(bow.matrix.clone()), bow.tokens.clone(), FeatureKind::Token),
            (None, Dataset::Numeric(t)) => (
                PcaInput::Dense(Matrix::from_vec(t.rows, t.columns.len(), t.values.clone())?),
                t.columns.clone(),
                FeatureKind::Feature,
            ),
            (None, _) => return Err(crate::Error::Internal("PCA planned without a matrix".into())),
        };
        let (rows, cols) = match &input {
            PcaInput::Dense(m) => (m.rows(), m.cols()),
            PcaInput::Sparse(c) => (c.rows, c.cols),
        };
        let k = match pca_plan.n_components {
            crate::config::ComponentsSpec::Count(k) => k as usize,
            crate::config::ComponentsSpec::VarianceFraction(_) => rows.min(cols),
        };
        let solver = pca::choose_solver(pca_plan.solver, rows, cols, Some(k)).0;
        let mem = crate::memory::pca(rows, cols, solver, k, pca_plan.oversamples);
        reporter.notice(&crate::memory::describe("pca", &mem));
        crate::memory::check_or_physical("pca", &mem, plan.max_memory)?;
        let result = stages.run("pca", None, || {
            let r = pca::fit(compute, input, pca_plan, plan.seed)?;
            let summary = format!(
                "{} components explain {:.4} of the variance (solver {}: {})",
                r.n_components,
                r.explained_variance_ratio.iter().sum::<f64>(),
                format!("{:?}", r.solver).to_lowercase(),
                r.solver_reason
            );
            Ok((r, summary))
        })?;
        outputs::pca_metrics(&result, &mut metrics);
        tables.push(("pca_components.parquet", outputs::pca_components(&result, &names, kind)));
        tables.push(("pca_features.parquet", outputs::pca_features(&result, &names, kind)));
        tables.push(("pca_projections.parquet", outputs::pca_projections(&result, dataset.row_ids())));
        details.insert(
            "pca".into(),
            serde_json::json!({
                "solver": result.solver,
                "solver_reason": result.solver_reason,
                "n_components": result.n_components,
                "backend": compute.name(),
            }),
        );
    }

    if let Some(model_plan) = &plan.model {
        let Dataset::Interactions(data) = &dataset else {
            return Err(crate::Error::Internal("model planned without interactions".into()));
        };
        let labels: Option<Vec<Option<String>>> = match &model_plan.labels {
            None => None,
            Some(lp) => {
                let map = data::read_labels(lp)?;
                Some(data.items.iter().map(|i| map.get(i).cloned()).collect())
            }
        };
        let pairs = match &model_plan.pairs {
            None => None,
            Some((path, format)) => Some(data::read_pairs(path, *format)?),
        };
        let dim = match model_plan.embedding_dim {
            crate::config::EmbeddingDim::Fixed(d) => d as usize,
            crate::config::EmbeddingDim::Auto => ((data.items.len() as f64).powf(0.25).round() as usize).max(1),
        };
        let mem =
            crate::memory::model(data.items.len(), dim, model_plan.hidden_units, model_plan.batch_size, backend.used);
        reporter.notice(&crate::memory::describe("model", &mem));
        // On the GPU the adapter's limits bound each tensor (checked when it is created); on the CPU the machine's memory.
        if backend.used == "cpu" {
            crate::memory::check_or_physical("model", &mem, plan.max_memory)?;
        } else {
            crate::memory::check("model", &mem, plan.max_memory)?;
        }
        let t = std::time::Instant::now();
        let out = train::run(compute, data, model_plan, labels.as_deref(), pairs.as_deref(), &mut metrics, reporter)?;
        let s = out.split_summary;
        metrics.push("model", "train_examples", s.train_examples as f64);
        metrics.push("model", "test_users", s.test_users as f64);
        metrics.push("model", "test_examples_last", s.test_last as f64);
        metrics.push("model", "test_examples_loo", s.test_loo as f64);
        metrics.push("model", "duplicate_items_dropped", s.duplicates_dropped as f64);
        metrics.push("model", "users_too_short", s.users_too_short as f64);
        metrics.push("model", "users_with_fewer_inputs", s.users_with_fewer_inputs as f64);
        if s.duplicates_dropped > 0 {
            reporter.notice(&format!("model: dropped {} repeated items within users", s.duplicates_dropped));
        }
        if s.users_too_short > 0 {
            reporter.notice(&format!("model: skipped {} users with fewer than 2 items", s.users_too_short));
        }
        if s.users_with_fewer_inputs > 0 {
            reporter.notice(&format!(
                "model: {} users have fewer than inputs_per_example + 1 = {} items; their examples use fewer inputs",
                s.users_with_fewer_inputs,
                model_plan.inputs_per_example + 1
            ));
        }
        let summary = summarize_eval(&metrics, model_plan.ks[0]);
        let seconds = t.elapsed().as_secs_f64();
        reporter.stage_finished("eval", &summary, seconds - out.train_seconds);
        stages.records.push(StageRecord {
            stage: "train".into(),
            seconds: out.train_seconds,
            summary: format!("{} epochs, {:.0} examples/s", out.epochs_run, out.examples_per_second),
        });
        stages.records.push(StageRecord { stage: "eval".into(), seconds: seconds - out.train_seconds, summary });
        tables.push(("embeddings.parquet", outputs::embeddings(&out, &data.items)));
        tables.push(("neighbors.parquet", outputs::neighbors(&out, &data.items)));
        details.insert(
            "model".into(),
            serde_json::json!({
                "items": out.shape.items,
                "embedding_dim": out.shape.dim,
                "hidden_units": out.shape.hidden,
                "pooling": out.shape.pooling,
                "epochs_run": out.epochs_run,
                "best_epoch": out.best_epoch,
                "backend": compute.name(),
            }),
        );
    }
    metrics.push("efficiency", "peak_rss_mb", crate::run_record::peak_rss_mb());

    let run_id = staging.run_id().to_owned();
    let outputs = stages.run("write", Some(tables.len() as u64 + 2), || {
        let mut written = Vec::new();
        for (i, (name, table)) in tables.iter().enumerate() {
            data::write_parquet(table, &staging.file(name))?;
            written.push(OutputRecord { file: (*name).to_owned(), rows: table.rows() });
            reporter.progress(i as u64 + 1, name);
        }
        let metrics_table = metrics.to_table(&run_id);
        data::write_parquet(&metrics_table, &staging.file("metrics.parquet"))?;
        written.push(OutputRecord { file: "metrics.parquet".into(), rows: metrics_table.rows() });
        let n = written.len();
        Ok((written, format!("{n} Parquet files")))
    })?;

    let record = RunRecord {
        run_id: run_id.clone(),
        job: plan.job_name.clone(),
        started_at: run_dir::rfc3339(started),
        finished_at: run_dir::rfc3339(SystemTime::now()),
        config_file: plan.config_file.clone(),
        config: plan.config.clone(),
        resolved: resolved_json(plan),
        seed: plan.seed,
        inputs: vec![fingerprint],
        versions: Versions::current(),
        backend: backend.clone(),
        stages: stages.records.clone(),
        details: serde_json::Value::Object(details),
        outputs,
    };
    let json = serde_json::to_vec_pretty(&record).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let run_json = staging.file("run.json");
    std::fs::write(&run_json, json).map_err(|e| crate::Error::output(&run_json, "cannot write", e))?;

    crate::interrupt::check()?;
    let run_dir = staging.commit(plan.keep_runs)?;
    Ok(RunSummary { run_id, run_dir, backend, metrics, stages: stages.records })
}

/// One line: model vs popularity on the first cut-off, both protocols.
fn summarize_eval(m: &Metrics, k: usize) -> String {
    let g = |stage: &str, metric: String| m.get(stage, &metric).unwrap_or(f64::NAN);
    format!(
        "recall@{k}: model {:.4} vs popularity {:.4} (last), {:.4} vs {:.4} (loo)",
        g("eval_model", format!("last_recall@{k}")),
        g("eval_popularity", format!("last_recall@{k}")),
        g("eval_model", format!("loo_recall@{k}")),
        g("eval_popularity", format!("loo_recall@{k}")),
    )
}

/// The values the plan resolved (paths, defaults) as run.json records them.
fn resolved_json(plan: &Plan) -> serde_json::Value {
    serde_json::json!({
        "input_path": plan.input.path,
        "input_format": plan.input.format,
        "input_columns": format!("{:?}", plan.input.columns),
        "bow": plan.bow.as_ref().map(|b| serde_json::json!({
            "lowercase": b.lowercase,
            "token_pattern": b.token_pattern.as_str(),
            "stop_words": b.stop_words,
            "min_df": b.min_df,
            "max_df": b.max_df,
            "max_features": b.max_features,
            "weighting": b.weighting,
        })),
        "pca": plan.pca.as_ref().map(|p| serde_json::json!({
            "n_components": p.n_components,
            "whiten": p.whiten,
            "standardize": p.standardize,
            "solver": p.solver,
            "oversamples": p.oversamples,
            "power_iterations": p.power_iterations,
        })),
        "output_dir": plan.output_dir,
        "keep_runs": plan.keep_runs,
        "backend": plan.backend,
    })
}
