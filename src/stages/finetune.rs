//! Fine-tuning: the starting encoder trained on the job's documents with the contrastive loss, written as a model
//! folder (`finetuned_model/`) into the run's staging folder, so that it appears only with the run; the contextual
//! stage then encodes with it (`contextual.model = "finetuned"`). With a document evaluation, the starting model's
//! vectors are kept too (`contextual_start`), so the evaluation shows both, and the documents held out of the
//! pairs are scored apart.

use std::collections::HashMap;
use std::time::Instant;

use super::{Artifacts, Context, DocVectors, StageOutput};
use crate::data::dataset::{Dataset, TextCorpus};
use crate::data::input::LabelsFile;
use crate::data::table::{ColumnData, Table};
use crate::encoder::{EncodeParams, Encoder, Precision, TextTokenizer, Tokens, WeightsFile};
use crate::error::{Error, Result};
use crate::finetune::{
    file_batches, held_out, label_batches, write_model_folder, ContrastiveTrainer, Example, Network, SentenceModules,
    StepReport,
};
use crate::plan::{FinetunePlan, PairSource};
use crate::runtime::memory::{self, Item};
use crate::runtime::metrics::Metrics;

const STAGE: &str = "finetune";

/// The folder the fine-tuned model is written to, inside the run.
pub const MODEL_DIR: &str = "finetuned_model";

/// The training texts and their batches.
struct Examples {
    texts: Vec<String>,
    batches: Vec<Vec<Example>>,
    /// Input rows held out of the pairs (labels only).
    held_out: Vec<usize>,
    /// Distinct anchors' count, for the summary.
    pairs: usize,
}

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.finetune.as_ref().ok_or_else(|| Error::Internal("a finetune stage without its plan".into()))?;
    let Dataset::Text(corpus) = artifacts.dataset()? else {
        return Err(Error::Internal("fine-tuning planned without documents".into()));
    };
    let examples = examples(ctx, plan, corpus)?;
    if examples.batches.is_empty() {
        return Err(Error::Stage {
            stage: STAGE,
            message: format!(
                "the pairs make no batch to train on: a batch needs at least half of finetune.batch_size = {} anchors \
                 (at least 2), and pairs from labels take one anchor per category per batch",
                plan.batch_size
            ),
        });
    }
    let tokenizer = TextTokenizer::open(&plan.folder.tokenizer_file(), plan.max_tokens)?;
    let tokens: Vec<Tokens> = examples.texts.iter().map(|t| tokenizer.encode(t)).collect::<Result<_>>()?;
    let weights = WeightsFile::open(&plan.folder.weights_file())?;
    let mut start_table = None;
    if let (Some(_), Some(c)) = (&ctx.plan.documents, &ctx.plan.contextual) {
        let values = encode_all(ctx, plan, &weights, &c.encode, corpus)?;
        let dim = plan.folder.config.hidden_size;
        start_table = Some(Table::new(vec![
            ("row_id", ColumnData::I64((0..corpus.ids.len() as i64).map(|r| r + ctx.first_row as i64).collect())),
            ("row", ColumnData::Str(corpus.ids.clone())),
            ("vector", ColumnData::Vectors { dim, values: values.clone() }),
        ]));
        artifacts.doc_vectors.push(DocVectors { method: "contextual_start", dim, values });
    }
    let most = examples.batches.iter().map(|b| sequences(b) * max_len(b, &tokens)).max().unwrap_or(0);
    let sequences_max = examples.batches.iter().map(|b| sequences(b)).max().unwrap_or(2);
    check_memory(ctx, plan, most)?;
    let total = examples.batches.len();
    let mut trainer = ContrastiveTrainer::new(
        ctx.backend,
        plan.folder.config.clone(),
        &weights,
        plan.optimizer,
        plan.loss,
        plan.pooling,
        sequences_max,
        total,
    )?;
    let (steps, seconds) = train(ctx, &mut trainer, &examples, &tokens)?;
    let dir = ctx.out_dir.join(MODEL_DIR);
    save(ctx, plan, &trainer, &steps, &dir)?;
    artifacts.finetuned = Some(dir);
    artifacts.held_out = Some(examples.held_out.clone());
    let mut out = finish(ctx, &examples, &steps, seconds, metrics)?;
    out.tables.extend(start_table.map(|t| ("text_embeddings_start.parquet", t)));
    Ok(out)
}

/// Every batch through the trainer: each step's figures and the seconds training took.
fn train(
    ctx: &Context<'_>,
    trainer: &mut ContrastiveTrainer<'_>,
    examples: &Examples,
    tokens: &[Tokens],
) -> Result<(Vec<StepReport>, f64)> {
    let total = examples.batches.len();
    ctx.reporter.stage_started(STAGE, Some(total as u64));
    let started = Instant::now();
    let mut steps: Vec<StepReport> = Vec::with_capacity(total);
    for batch in &examples.batches {
        crate::runtime::interrupt::check()?;
        let anchors: Vec<Tokens> = batch.iter().map(|e| tokens[e.anchor].clone()).collect();
        let mut cands: Vec<Tokens> = batch.iter().map(|e| tokens[e.positive].clone()).collect();
        if batch.iter().all(|e| e.negative.is_some()) {
            cands.extend(batch.iter().filter_map(|e| e.negative).map(|n| tokens[n].clone()));
        }
        let r = trainer.step(&anchors, &cands)?;
        if !r.loss.is_finite() {
            return Err(Error::Stage {
                stage: STAGE,
                message: format!("the loss became {} at step {}", r.loss, steps.len() + 1),
            });
        }
        steps.push(r);
        let s = started.elapsed().as_secs_f64().max(1e-9);
        let pairs: usize = steps.len();
        ctx.reporter.progress(pairs as u64, &format!("loss {:.4}, {:.1} steps/s", r.loss, pairs as f64 / s));
    }
    Ok((steps, started.elapsed().as_secs_f64()))
}

/// The trained weights written as a model folder at `dir`.
fn save(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    trainer: &ContrastiveTrainer<'_>,
    steps: &[StepReport],
    dir: &std::path::Path,
) -> Result<()> {
    let trained = trainer.net.weights.export(ctx.backend)?;
    let provenance = serde_json::json!({
        "tool": "embjob",
        "version": env!("CARGO_PKG_VERSION"),
        "start": plan.folder.dir,
        "objective": plan.objective,
        "steps": steps.len(),
        "epochs": plan.epochs,
        "batch_size": plan.batch_size,
        "optimizer": plan.optimizer,
        "loss": plan.loss,
        "max_tokens": plan.max_tokens,
        "seed": plan.seed,
        "backend": ctx.backend.kind(),
        "first_loss": steps.first().map(|s| s.loss),
        "last_loss": steps.last().map(|s| s.loss),
    });
    let modules = SentenceModules {
        pooling: plan.pooling,
        normalize: plan.normalize,
        max_seq_length: plan.max_tokens,
        dim: plan.folder.config.hidden_size,
    };
    write_model_folder(dir, &plan.folder.dir, &trained, modules, &provenance)
}

fn sequences(b: &[Example]) -> usize {
    let negatives = if b.iter().all(|e| e.negative.is_some()) { b.len() } else { 0 };
    2 * b.len() + negatives
}

fn max_len(b: &[Example], tokens: &[Tokens]) -> usize {
    b.iter()
        .flat_map(|e| [Some(e.anchor), Some(e.positive), e.negative])
        .flatten()
        .map(|i| tokens[i].ids.len())
        .max()
        .unwrap_or(1)
}

/// The weights, their gradients and moments, and the activations of the largest batch, against `job.max_memory`.
fn check_memory(ctx: &Context<'_>, plan: &FinetunePlan, rows: usize) -> Result<()> {
    let c = &plan.folder.config;
    let weights = Encoder::weight_bytes(c, Precision::F32) as u64;
    let mem = vec![
        Item { what: format!("weights, gradients and AdamW's moments on {}", ctx.backend.kind()), bytes: 4 * weights },
        Item {
            what: format!("activations kept for the backward pass ({rows} token rows)"),
            bytes: Network::activation_bytes(c, rows) as u64,
        },
    ];
    ctx.reporter.notice(&memory::describe(STAGE, &mem));
    memory::check(STAGE, &mem, ctx.plan.max_memory)
}

/// The texts and batches the plan's pairs make.
fn examples(ctx: &Context<'_>, plan: &FinetunePlan, corpus: &TextCorpus) -> Result<Examples> {
    match &plan.pairs {
        PairSource::Labels { holdout, split_seed } => {
            let labels = ctx
                .plan
                .documents
                .as_ref()
                .and_then(|d| d.labels.as_ref())
                .ok_or_else(|| Error::Internal("pairs from labels without eval.labels".into()))?;
            let cats = doc_categories(labels, &corpus.ids)?;
            let labelled: Vec<usize> = (0..corpus.ids.len()).filter(|&d| cats[d].is_some()).collect();
            let held = held_out(&labelled, *holdout, *split_seed);
            let train: Vec<usize> = labelled.iter().copied().filter(|d| held.binary_search(d).is_err()).collect();
            let train_cats: Vec<u32> = train.iter().filter_map(|&d| cats[d]).collect();
            let batches = label_batches(&train, &train_cats, plan.epochs, plan.batch_size, plan.seed);
            Ok(Examples { texts: corpus.texts.clone(), batches, held_out: held, pairs: train.len() })
        }
        PairSource::File(file) => {
            let pairs = crate::data::read_training_pairs(&file.path, file.format)?;
            let mut texts = Vec::new();
            let row_of: HashMap<&str, usize> = corpus.ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
            let mut index = |column: &str, values: &[String]| -> Result<Vec<usize>> {
                values
                    .iter()
                    .enumerate()
                    .map(|(r, v)| {
                        if pairs.by_id {
                            let row = row_of.get(v.as_str()).ok_or_else(|| {
                                Error::input(
                                    &file.path,
                                    Some(column),
                                    format!("data row {}: '{v}' is not a row id of the input", r + 1),
                                )
                            })?;
                            texts.push(corpus.texts[*row].clone());
                        } else {
                            texts.push(v.clone());
                        }
                        Ok(texts.len() - 1)
                    })
                    .collect()
            };
            let suffix = if pairs.by_id { "_id" } else { "" };
            let a = index(&format!("anchor{suffix}"), &pairs.anchor)?;
            let p = index(&format!("positive{suffix}"), &pairs.positive)?;
            let n = pairs.negative.as_ref().map(|v| index(&format!("negative{suffix}"), v)).transpose()?;
            let list: Vec<Example> = (0..a.len())
                .map(|i| Example { anchor: a[i], positive: p[i], negative: n.as_ref().map(|n| n[i]) })
                .collect();
            let batches = file_batches(&list, plan.epochs, plan.batch_size, plan.seed);
            Ok(Examples { texts, batches, held_out: Vec::new(), pairs: list.len() })
        }
    }
}

/// Each document's category id (by `eval.labels`), or `None`.
fn doc_categories(lp: &LabelsFile, ids: &[String]) -> Result<Vec<Option<u32>>> {
    let by_row = crate::data::read_labels(lp)?;
    let mut names: Vec<&String> = by_row.values().collect();
    names.sort();
    names.dedup();
    let id_of: HashMap<&String, u32> = names.into_iter().zip(0..).collect();
    let cats: Vec<Option<u32>> = ids.iter().map(|id| by_row.get(id).map(|c| id_of[c])).collect();
    if cats.iter().all(Option::is_none) {
        return Err(Error::input(&lp.path, Some(&lp.item), "no value of this column is a row id of the input"));
    }
    Ok(cats)
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
    for batch in super::contextual::batches(&lengths, encode.batch_tokens) {
        crate::runtime::interrupt::check()?;
        let b: Vec<Tokens> = batch.iter().map(|&d| tokens[d].clone()).collect();
        let v = encoder.embed(&b, encode.pooling, encode.normalize)?;
        for (i, &d) in batch.iter().enumerate() {
            out[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
        }
    }
    Ok(out)
}

/// The loss curve's table, the stage's metrics and summary.
fn finish(
    ctx: &Context<'_>,
    ex: &Examples,
    steps: &[StepReport],
    seconds: f64,
    metrics: &mut Metrics,
) -> Result<StageOutput> {
    let n = steps.len();
    let tokens: usize = steps.iter().map(|s| s.tokens).sum();
    let anchors: usize = ex.batches.iter().map(Vec::len).sum();
    let tail = (n / 10).max(1);
    let last = steps[n - tail..].iter().map(|s| s.loss).sum::<f64>() / tail as f64;
    let first = steps[..tail].iter().map(|s| s.loss).sum::<f64>() / tail as f64;
    for (name, value) in [
        ("steps", n as f64),
        ("pairs", ex.pairs as f64),
        ("pairs_trained", anchors as f64),
        ("held_out_documents", ex.held_out.len() as f64),
        ("first_loss", first),
        ("last_loss", last),
        ("seconds", seconds),
        ("pairs_per_second", anchors as f64 / seconds.max(1e-9)),
        ("tokens_per_second", tokens as f64 / seconds.max(1e-9)),
        ("peak_rss_mb", memory::peak_rss_mb()),
    ] {
        metrics.push(STAGE, name, value);
    }
    for (i, s) in steps.iter().enumerate() {
        metrics.push_at(STAGE, "loss", i as i64 + 1, s.loss);
    }
    let table = Table::new(vec![
        ("step", ColumnData::I64((1..=n as i64).collect())),
        ("loss", ColumnData::F64(steps.iter().map(|s| s.loss).collect())),
        ("learning_rate", ColumnData::F64(steps.iter().map(|s| s.update.learning_rate).collect())),
        ("grad_norm", ColumnData::F64(steps.iter().map(|s| s.update.grad_norm).collect())),
    ]);
    let summary = format!(
        "{n} steps on {anchors} pairs in {seconds:.1} s ({:.1} pairs/s, {:.0} tokens/s): loss {first:.4} → {last:.4} \
         (mean of the first and last tenth); model in {MODEL_DIR}/",
        anchors as f64 / seconds.max(1e-9),
        tokens as f64 / seconds.max(1e-9)
    );
    ctx.reporter.stage_finished(STAGE, &summary, seconds);
    Ok(StageOutput {
        tables: vec![("finetune_loss.parquet", table)],
        summary,
        written: vec![(format!("{MODEL_DIR}/"), 1)],
        ..StageOutput::default()
    })
}
