//! The embedding model: labels and pairs for the evaluation, the embedding width resolved once (`auto`: the
//! fourth root of the item count), the memory plan, then training and evaluation (`train::run`), reported as two
//! parts, train and eval.

use super::{Artifacts, Context, StageOutput};
use crate::backend::BackendKind;
use crate::data;
use crate::data::dataset::Dataset;
use crate::error::{Error, Result};
use crate::runtime::memory;
use crate::runtime::metrics::Metrics;
use crate::stages::tables;
use crate::job::run_record::StageRecord;
use crate::recommend::train;

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.model.as_ref().ok_or_else(|| Error::Internal("a model stage without its plan".into()))?;
    let Dataset::Interactions(data) = artifacts.dataset()? else {
        return Err(Error::Internal("model planned without interactions".into()));
    };
    let labels: Option<Vec<Option<String>>> = match &plan.labels {
        None => None,
        Some(lp) => {
            let map = data::read_labels(lp)?;
            Some(data.items.iter().map(|i| map.get(i).cloned()).collect())
        }
    };
    let pairs = match &plan.pairs {
        None => None,
        Some((path, format)) => Some(data::read_pairs(path, *format)?),
    };
    let dim = plan.embedding_dim_for(data.items.len());
    let used = ctx.report.used;
    let negatives = (plan.loss == crate::recommend::sampling::Loss::SampledSoftmax).then_some(plan.negatives);
    let mem = memory::model(data.items.len(), dim, plan.hidden_units, plan.batch_size, negatives, used);
    ctx.reporter.notice(&memory::describe("model", &mem));
    // On the GPU the adapter's limits bound each tensor (checked when it is created); on the CPU the machine's memory.
    match used {
        BackendKind::Cpu => memory::check_or_physical("model", &mem, ctx.plan.max_memory)?,
        BackendKind::Gpu => memory::check("model", &mem, ctx.plan.max_memory)?,
    }
    let t = std::time::Instant::now();
    let out = train::run(ctx.backend, data, plan, dim, labels.as_deref(), pairs.as_deref(), metrics, ctx.reporter)?;
    let s = out.split_summary;
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
            plan.inputs_per_example + 1
        ));
    }
    let summary = summarize_eval(metrics, plan.ks[0]);
    let eval_seconds = t.elapsed().as_secs_f64() - out.train_seconds;
    ctx.reporter.stage_finished("eval", &summary, eval_seconds);
    let parts = vec![
        StageRecord {
            stage: "train".into(),
            seconds: out.train_seconds,
            summary: format!("{} epochs, {:.0} examples/s", out.epochs_run, out.examples_per_second),
        },
        StageRecord { stage: "eval".into(), seconds: eval_seconds, summary: summary.clone() },
    ];
    let tables = vec![
        ("embeddings.parquet", tables::embeddings(&out, &data.items)),
        ("neighbors.parquet", tables::neighbors(&out, &data.items)),
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
    Ok(StageOutput { tables, summary, details: Some(details), parts, written: Vec::new() })
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
