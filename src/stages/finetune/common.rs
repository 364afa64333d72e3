//! What both objectives share: the stage's name and model folder, the starting model's vectors (the "before" of
//! the document evaluation), the memory plan and the written model folder.

use super::super::{Context, DocVectors};
use crate::data::dataset::TextCorpus;
use crate::data::table::{ColumnData, Table};
use crate::encoder::{EncodeParams, Encoder, Precision, TextTokenizer, Tokens, WeightsFile};
use crate::error::Result;
use crate::finetune::{write_model_folder, Network, SentenceModules, StepReport};
use crate::plan::FinetunePlan;
use crate::runtime::memory::{self, Item};

pub const STAGE: &str = "finetune";

/// The folder the fine-tuned model is written to, inside the run.
pub const MODEL_DIR: &str = "finetuned_model";

/// The starting model's vectors of every document, with a document evaluation (the "before"): to keep as
/// `contextual_start`, and as the table `text_embeddings_start.parquet`.
pub fn start_vectors(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    weights: &WeightsFile,
    corpus: &TextCorpus,
) -> Result<Option<(Table, DocVectors)>> {
    let (Some(_), Some(c)) = (&ctx.plan.documents, &ctx.plan.contextual) else { return Ok(None) };
    let values = encode_all(ctx, plan, weights, &c.encode, corpus)?;
    let dim = plan.folder.config.hidden_size;
    let table = Table::new(vec![
        ("row_id", ColumnData::I64((0..corpus.ids.len() as i64).map(|r| r + ctx.first_row as i64).collect())),
        ("row", ColumnData::Str(corpus.ids.clone())),
        ("vector", ColumnData::Vectors { dim, values: values.clone() }),
    ]);
    Ok(Some((table, DocVectors { method: "contextual_start", dim, values })))
}

/// The trained weights written as a model folder at `dir`; `extra` joins the provenance.
pub fn save(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    trained: &[crate::finetune::NamedTensor],
    steps: &[StepReport],
    extra: serde_json::Value,
    dir: &std::path::Path,
) -> Result<()> {
    let mut provenance = serde_json::json!({
        "tool": "embjob",
        "version": env!("CARGO_PKG_VERSION"),
        "start": plan.folder.dir,
        "objective": plan.objective,
        "steps": steps.len(),
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "optimizer": plan.optimizer,
        "dropout": plan.dropout,
        "max_tokens": plan.max_tokens,
        "seed": plan.seed,
        "backend": ctx.backend.kind(),
        "first_loss": steps.first().map(|s| s.loss),
        "last_loss": steps.last().map(|s| s.loss),
    });
    if let (Some(p), serde_json::Value::Object(more)) = (provenance.as_object_mut(), extra) {
        p.extend(more);
    }
    let modules = SentenceModules {
        pooling: plan.pooling,
        normalize: plan.normalize,
        max_seq_length: plan.max_tokens,
        dim: plan.folder.config.hidden_size,
    };
    write_model_folder(dir, &plan.folder.dir, trained, modules, &provenance)
}

/// The weights, their gradients and moments, the activations of the largest batch (and the loss's own, when
/// large), against `job.max_memory`.
/// `(rows, tokens)`: the most padded rows and the most real tokens of a batch.
pub fn check_memory(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    (rows, tokens): (usize, usize),
    loss: Option<Item>,
) -> Result<()> {
    let c = &plan.folder.config;
    let weights = Encoder::weight_bytes(c, Precision::F32) as u64;
    let mut mem = vec![
        Item { what: format!("weights, gradients and AdamW's moments on {}", ctx.backend.kind()), bytes: 4 * weights },
        Item {
            what: format!("activations kept for the backward pass ({tokens} tokens, attention on {rows} padded rows)"),
            bytes: Network::activation_bytes(c, rows, tokens) as u64,
        },
    ];
    mem.extend(loss);
    ctx.reporter.notice(&memory::describe(STAGE, &mem));
    memory::check(STAGE, &mem, ctx.plan.max_memory)
}

/// Every document through the starting model, as the contextual stage encodes (the "before" of the evaluation).
fn encode_all(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    weights: &WeightsFile,
    encode: &EncodeParams,
    corpus: &TextCorpus,
) -> Result<Vec<f32>> {
    let tokenizer = TextTokenizer::open(&plan.folder.tokenizer_file(), encode.max_tokens)?;
    let mut encoder = Encoder::new(ctx.backend, plan.folder.config.clone(), weights, Precision::F32)?;
    let tokens: Vec<Tokens> = corpus.texts.iter().map(|t| tokenizer.encode(t)).collect::<Result<_>>()?;
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let h = plan.folder.config.hidden_size;
    let mut out = vec![0f32; tokens.len() * h];
    for batch in super::super::contextual::batches(&lengths, encode.batch_tokens) {
        crate::runtime::interrupt::check()?;
        let b: Vec<Tokens> = batch.iter().map(|&d| tokens[d].clone()).collect();
        let v = encoder.embed(&b, encode.pooling, encode.normalize)?;
        for (i, &d) in batch.iter().enumerate() {
            out[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
        }
    }
    Ok(out)
}

/// The loss curve: `finetune_loss.parquet`'s table, each step's loss as a metric (`loss[step]`), and the means of
/// the first and last tenth of the steps (the summary's "first" and "last" loss).
pub fn loss_curve(steps: &[StepReport], metrics: &mut crate::runtime::metrics::Metrics) -> (Table, f64, f64) {
    let n = steps.len();
    let tail = (n / 10).max(1).min(n);
    let mean = |s: &[StepReport]| s.iter().map(|s| s.loss).sum::<f64>() / s.len().max(1) as f64;
    let (first, last) = (mean(&steps[..tail]), mean(&steps[n.saturating_sub(tail)..]));
    for (i, s) in steps.iter().enumerate() {
        metrics.push_at(STAGE, "loss", i as i64 + 1, s.loss);
    }
    let table = Table::new(vec![
        ("step", ColumnData::I64((1..=n as i64).collect())),
        ("loss", ColumnData::F64(steps.iter().map(|s| s.loss).collect())),
        ("learning_rate", ColumnData::F64(steps.iter().map(|s| s.update.learning_rate).collect())),
        ("grad_norm", ColumnData::F64(steps.iter().map(|s| s.update.grad_norm).collect())),
    ]);
    (table, first, last)
}
