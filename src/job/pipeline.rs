//! Runs a validated [`Plan`]: the planned stages in order, then every output into a staging folder that becomes
//! visible (`latest`) only when all of it is written.

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::backend::{self, BackendReport};
use crate::data;
use crate::data::table::Table;
use crate::error::{Error, Result};
use crate::job::run_dir::{self, Staging};
use crate::job::run_record::{OutputRecord, RunRecord, Versions};
use crate::job::shard::ShardSet;
use crate::plan::config::BackendChoice;
use crate::plan::Plan;
use crate::runtime::metrics::Metrics;
use crate::runtime::progress::Reporter;
use crate::stages::StageRecord;
use crate::stages::{Artifacts, Context};

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

impl RunSummary {
    /// The dimension of each kind of vector the run made, for the closing summary: bag-of-words rows (sparse, one
    /// dimension per vocabulary token), PCA projections, the model's item embeddings, contextual document vectors.
    pub fn vector_dims(&self) -> Vec<String> {
        let get = |stage: &str, metric: &str| self.metrics.get(stage, metric).map(|v| v as u64);
        let mut out = Vec::new();
        if let Some(v) = get("bow", "vocabulary_size") {
            out.push(format!("bag-of-words {v} (sparse)"));
        }
        if let Some(k) = get("pca", "n_components") {
            out.push(format!("pca {k}"));
        }
        if let Some(d) = get("train", "embedding_dim") {
            out.push(format!("model items {d}"));
        }
        if let Some(d) = get("contextual", "embedding_dim") {
            out.push(format!("contextual {d}"));
        }
        out
    }
}

/// Runs the whole job. On error nothing of this run is visible and earlier runs are untouched.
pub fn run(plan: &Plan, reporter: &dyn Reporter) -> Result<RunSummary> {
    run_from(plan, None, reporter)
}

/// Runs the whole job from its input, or (`embjob merge`) from a checked set of shards that read and encoded it:
/// the stages, then every output into the staging folder, run.json and the report, then the commit.
pub fn run_from(plan: &Plan, shards: Option<&ShardSet>, reporter: &dyn Reporter) -> Result<RunSummary> {
    let started = SystemTime::now();
    let (compute, backend) = backend::open(plan.backend)?;
    if plan.backend == BackendChoice::Auto {
        reporter.notice(&format!("backend: {}", backend.reason));
    }
    let staging = Staging::create(&plan.output_dir)?;
    let ctx = Context {
        plan,
        backend: compute.as_ref(),
        report: &backend,
        reporter,
        out_dir: staging.dir(),
        first_row: 0,
        shards: shards.map(|s| s as &dyn crate::stages::MergedInput),
    };
    let mut ran = run_stages(&ctx)?;
    if let Some(set) = shards {
        ran.details.insert("shards".into(), shards_json(set));
    }
    crate::runtime::interrupt::check()?;
    let (outputs, plots) = write_outputs(plan, &staging, &mut ran, reporter)?;
    let record = RunRecord {
        run_id: staging.run_id().to_owned(),
        job: plan.job_name.clone(),
        started_at: run_dir::rfc3339(started),
        finished_at: run_dir::rfc3339(SystemTime::now()),
        config_file: plan.config_file.clone(),
        config: plan.config.clone(),
        resolved: resolved_json(plan),
        seed: plan.seed,
        inputs: std::mem::take(&mut ran.artifacts.fingerprints),
        versions: Versions::current(),
        backend: backend.clone(),
        stages: ran.records.clone(),
        details: serde_json::Value::Object(std::mem::take(&mut ran.details)),
        outputs,
    };
    if record.inputs.is_empty() {
        return Err(Error::Internal("the run has no input fingerprint".into()));
    }
    let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
    let run_json = staging.file("run.json");
    std::fs::write(&run_json, json).map_err(|e| Error::output(&run_json, "cannot write", e))?;
    // The report reads run.json as written (its stages and files), so it comes last.
    if plan.plots {
        crate::view::report::write(staging.dir(), &plots)?;
    }
    crate::runtime::interrupt::check()?;
    // The run's new vectors go into the cache folder under an incoming name first (a full disk fails the run here),
    // and become segments only once the run is committed.
    let incoming = ran.artifacts.cache_segments.iter().map(|s| s.bring_in()).collect::<Result<Vec<_>>>()?;
    let run_id = record.run_id;
    let run_dir = staging.commit(plan.keep_runs)?;
    publish_cache(plan, incoming, ran.artifacts.cache_store.as_deref(), reporter);
    Ok(RunSummary { run_id, run_dir, backend, metrics: ran.metrics, stages: ran.records })
}

/// After the commit: the run's new segments visible in the cache, then its expiry and compaction.
fn publish_cache(
    plan: &Plan,
    incoming: Vec<crate::stages::vector_cache::Incoming>,
    store: Option<&std::path::Path>,
    reporter: &dyn Reporter,
) {
    for i in incoming {
        i.publish(reporter);
    }
    let keep_days = plan.contextual.as_ref().and_then(|c| c.cache.as_ref().ok()).map(|c| c.keep_days);
    if let (Some(dir), Some(days)) = (store, keep_days) {
        crate::stages::vector_cache::maintain(dir, days, reporter);
    }
}

/// What the stages left: their artifacts and metrics, the tables still to write, the files they wrote themselves,
/// their run.json details and their timed records.
struct Ran {
    artifacts: Artifacts,
    metrics: Metrics,
    tables: Vec<(&'static str, Table)>,
    streamed: Vec<OutputRecord>,
    details: serde_json::Map<String, serde_json::Value>,
    records: Vec<StageRecord>,
}

/// The planned stages in order, each timed and reported (a stage that reports its own parts is recorded by them).
fn run_stages(ctx: &Context<'_>) -> Result<Ran> {
    let mut ran = Ran {
        artifacts: Artifacts::default(),
        metrics: Metrics::default(),
        tables: Vec::new(),
        streamed: Vec::new(),
        details: serde_json::Map::new(),
        records: Vec::new(),
    };
    for stage in crate::stages::planned(ctx.plan) {
        crate::runtime::interrupt::check()?;
        let name = stage.name();
        let self_reported = crate::stages::reports_itself(stage);
        if !self_reported {
            ctx.reporter.stage_started(name, None);
        }
        let t = Instant::now();
        let out = crate::stages::run(stage, ctx, &mut ran.artifacts, &mut ran.metrics)?;
        let seconds = t.elapsed().as_secs_f64();
        if out.parts.is_empty() {
            if !self_reported {
                ctx.reporter.stage_finished(name, &out.summary, seconds);
            }
            ran.records.push(StageRecord { stage: name.to_owned(), seconds, summary: out.summary });
        } else {
            ran.records.extend(out.parts);
        }
        ran.tables.extend(out.tables);
        ran.streamed.extend(out.written.into_iter().map(|(file, rows)| OutputRecord { file, rows }));
        if let Some(d) = out.details {
            ran.details.insert(name.into(), d);
        }
    }
    ran.metrics.push("efficiency", "peak_rss_mb", crate::runtime::memory::peak_rss_mb());
    Ok(ran)
}

/// The write step: every table and the metrics as Parquet, the hand-off formats and the plots into the staging
/// folder; the files written (with what the stages streamed) and the plots, for run.json and the report.
fn write_outputs(
    plan: &Plan,
    staging: &Staging,
    ran: &mut Ran,
    reporter: &dyn Reporter,
) -> Result<(Vec<OutputRecord>, Vec<String>)> {
    reporter.stage_started("write", Some(ran.tables.len() as u64 + 2));
    let t = Instant::now();
    let mut outputs = std::mem::take(&mut ran.streamed);
    for (i, (name, table)) in ran.tables.iter().enumerate() {
        data::write_parquet(table, &staging.file(name))?;
        outputs.push(OutputRecord { file: (*name).to_owned(), rows: table.rows() });
        reporter.progress(i as u64 + 1, name);
    }
    let metrics_table = crate::data::table::metrics_table(&ran.metrics, staging.run_id());
    data::write_parquet(&metrics_table, &staging.file("metrics.parquet"))?;
    outputs.push(OutputRecord { file: "metrics.parquet".into(), rows: metrics_table.rows() });
    let mut summary = vec![format!("{} Parquet files", outputs.len())];
    let mut handed_off = 0;
    if plan.handoff {
        let (handed, notices) = crate::stages::handoff::write(plan, staging.dir())?;
        notices.iter().for_each(|n| reporter.notice(n));
        handed_off = handed.len();
        for w in handed {
            outputs.push(OutputRecord { file: format!("{}.vec", w.name), rows: w.vectors });
            outputs.push(OutputRecord { file: format!("projector/{}/tensors.tsv", w.name), rows: w.projector_points });
        }
    }
    let mut plots = Vec::new();
    if plan.plots {
        plots = crate::view::plots::write(plan, staging.dir())?;
        outputs.extend(plots.iter().map(|p| OutputRecord { file: p.clone(), rows: 1 }));
        outputs.push(OutputRecord { file: "report.html".into(), rows: 1 });
    }
    if !plots.is_empty() {
        summary.push(format!("{} plots", plots.len()));
    }
    if handed_off > 0 {
        summary.push(format!("{handed_off} embeddings as .vec and projector files"));
    }
    let summary = summary.join(", ");
    let seconds = t.elapsed().as_secs_f64();
    reporter.stage_finished("write", &summary, seconds);
    ran.records.push(StageRecord { stage: "write".into(), seconds, summary });
    Ok((outputs, plots))
}

/// What run.json records of the shards a merged run came from: each one's rows, time and bytes written.
fn shards_json(set: &ShardSet) -> serde_json::Value {
    let each: Vec<serde_json::Value> = set
        .manifests
        .iter()
        .map(|m| {
            serde_json::json!({
                "shard": m.shard,
                "files": m.files.len(),
                "first_row": m.first_row,
                "rows": m.rows,
                "seconds": m.seconds,
                "bytes_written": m.written.iter().map(|w| w.1).sum::<u64>(),
            })
        })
        .collect();
    serde_json::json!({ "count": set.count(), "shards": each })
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
