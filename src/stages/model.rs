//! The embedding model: split → train → evaluate → outputs. The embedding width is resolved once (`auto`: the
//! fourth root of the item count) and the memory plan checked before training; training and evaluation are
//! reported as two parts, train and eval.

use super::{output_tables, Artifacts, Context, StageOutput, StageRecord};
use crate::backend::BackendKind;
use crate::data;
use crate::data::dataset::{Dataset, Interactions};
use crate::error::{Error, Result};
use crate::plan::ModelPlan;
use crate::recommend::sampling::Loss;
use crate::recommend::train::{self, ModelOutput, ModelParams, SplitSummary};
use crate::runtime::memory;
use crate::runtime::metrics::Metrics;

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.model.as_ref().ok_or_else(|| Error::Internal("a model stage without its plan".into()))?;
    let Dataset::Interactions(data) = artifacts.dataset()? else {
        return Err(Error::Internal("model planned without interactions".into()));
    };
    let params = &plan.params;
    let (labels, pairs) = read_side_files(plan, data)?;
    let dim = params.embedding_dim_for(data.items.len());
    check_memory(ctx, params, data.items.len(), dim)?;
    let t = std::time::Instant::now();
    let prepared = train::split_data(data, params)?;
    let trained = train::train(ctx.backend, &prepared, params, dim, metrics, ctx.reporter)?;
    let out = train::evaluate(ctx.backend, &prepared, trained, params, (labels.as_deref(), pairs.as_deref()), metrics)?;
    report_split(ctx, &out.split_summary, params.inputs_per_example, metrics);
    let summary = summarize_eval(metrics, params.ks[0]);
    let eval_seconds = t.elapsed().as_secs_f64() - out.train_seconds;
    ctx.reporter.stage_finished("eval", &summary, eval_seconds);
    Ok(outputs(ctx, &out, &data.items, summary, eval_seconds))
}

/// Each item's category (`eval.labels`) and the people's similarity pairs (`eval.pairs`), when configured.
#[allow(clippy::type_complexity)]
fn read_side_files(
    plan: &ModelPlan,
    data: &Interactions,
) -> Result<(Option<Vec<Option<String>>>, Option<Vec<(String, String, f64)>>)> {
    let labels = match &plan.labels {
        None => None,
        Some(lp) => {
            let map = data::read_labels(lp)?;
            Some(data.items.iter().map(|i| map.get(i).cloned()).collect())
        }
    };
    let pairs = plan.pairs.as_ref().map(|p| data::read_pairs(&p.path, p.format)).transpose()?;
    Ok((labels, pairs))
}

/// The memory plan, stated and checked: on the GPU the adapter's limits bound each tensor (checked when it is
/// created), on the CPU the machine's memory.
fn check_memory(ctx: &Context<'_>, params: &ModelParams, items: usize, dim: usize) -> Result<()> {
    let used = ctx.report.used;
    let negatives = (params.loss == Loss::SampledSoftmax).then_some(params.negatives);
    let mem =
        crate::recommend::network::memory_plan(items, dim, params.hidden_units, params.batch_size, negatives, used);
    ctx.reporter.notice(&memory::describe("model", &mem));
    match used {
        BackendKind::Cpu => memory::check_or_physical("model", &mem, ctx.plan.max_memory),
        BackendKind::Gpu => memory::check("model", &mem, ctx.plan.max_memory),
    }
}

/// The split's sizes as metrics, and notices for what it dropped or shortened.
fn report_split(ctx: &Context<'_>, s: &SplitSummary, inputs_per_example: usize, metrics: &mut Metrics) {
    metrics.push("model", "train_examples", s.train_examples as f64);
    metrics.push("model", "test_users", s.test_users as f64);
    metrics.push("model", "test_examples_last", s.test_last as f64);
    metrics.push("model", "test_examples_loo", s.test_loo as f64);
    metrics.push("model", "duplicate_items_dropped", s.duplicates_dropped as f64);
    metrics.push("model", "users_too_short", s.users_too_short as f64);
    metrics.push("model", "users_with_fewer_inputs", s.users_with_fewer_inputs as f64);
    if s.duplicates_dropped > 0 {
        ctx.reporter.notice(&format!("model: dropped {} repeated items within users", s.duplicates_dropped));
    }
    if s.users_too_short > 0 {
        ctx.reporter.notice(&format!("model: skipped {} users with fewer than 2 items", s.users_too_short));
    }
    if s.users_with_fewer_inputs > 0 {
        ctx.reporter.notice(&format!(
            "model: {} users have fewer than inputs_per_example + 1 = {} items; their examples use fewer inputs",
            s.users_with_fewer_inputs,
            inputs_per_example + 1
        ));
    }
}

/// The stage's tables, its two timed parts and its run.json details.
fn outputs(ctx: &Context<'_>, out: &ModelOutput, items: &[String], summary: String, eval_seconds: f64) -> StageOutput {
    let parts = vec![
        StageRecord {
            stage: "train".into(),
            seconds: out.train_seconds,
            summary: format!("{} epochs, {:.0} examples/s", out.epochs_run, out.examples_per_second),
        },
        StageRecord { stage: "eval".into(), seconds: eval_seconds, summary: summary.clone() },
    ];
    let tables = vec![
        ("embeddings.parquet", output_tables::embeddings(out, items)),
        ("neighbors.parquet", output_tables::neighbors(out, items)),
    ];
    let details = serde_json::json!({
        "items": out.shape.items,
        "embedding_dim": out.shape.dim,
        "hidden_units": out.shape.hidden,
        "pooling": out.shape.pooling,
        "epochs_run": out.epochs_run,
        "best_epoch": out.best_epoch,
        "backend": ctx.backend.kind(),
    });
    StageOutput { tables, summary, details: Some(details), parts, written: Vec::new() }
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
