//! Contrastive fine-tuning: pairs from a file, or drawn from `eval.labels` with a share of the documents held out
//! of them (the document evaluation scores those apart).

use std::collections::HashMap;
use std::time::Instant;

use super::super::{Artifacts, Context, StageOutput};
use super::common::{check_memory, loss_curve, save, start_vectors, MODEL_DIR, STAGE};
use crate::data::dataset::{Dataset, TextCorpus};
use crate::data::input::LabelsFile;
use crate::encoder::{TextTokenizer, Tokens, WeightsFile};
use crate::error::{Error, Result};
use crate::finetune::{file_batches, held_out, label_batches, ContrastiveTrainer, Example, StepReport};
use crate::plan::{FinetunePlan, PairSource};
use crate::runtime::memory;
use crate::runtime::metrics::Metrics;

/// The training texts and their batches.
struct Examples {
    texts: Vec<String>,
    batches: Vec<Vec<Example>>,
    /// Input rows held out of the pairs (labels only).
    held_out: Vec<usize>,
    /// Distinct anchors' count, for the summary.
    pairs: usize,
}

pub fn run(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    artifacts: &mut Artifacts,
    metrics: &mut Metrics,
) -> Result<StageOutput> {
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
    let most = examples.batches.iter().map(|b| sequences(b) * max_len(b, &tokens)).max().unwrap_or(0);
    let sequences_max = examples.batches.iter().map(|b| sequences(b)).max().unwrap_or(2);
    let real = examples.batches.iter().map(|b| real_tokens(b, &tokens)).max().unwrap_or(0);
    check_memory(ctx, plan, (most, real), None)?;
    let start = start_vectors(ctx, plan, &weights, corpus)?;
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
    trainer.net.reserve(most, real)?;
    trainer.net.set_dropout(plan.dropout, plan.seed);
    let (steps, seconds) = train(ctx, &mut trainer, &examples, &tokens)?;
    let dir = ctx.out_dir.join(MODEL_DIR);
    let trained = trainer.net.weights.export(ctx.backend)?;
    save(ctx, plan, &trained, &steps, serde_json::json!({ "loss": plan.loss }), &dir)?;
    artifacts.finetuned = Some(dir);
    artifacts.held_out = Some(examples.held_out.clone());
    let mut out = finish(ctx, &examples, &steps, seconds, metrics)?;
    if let Some((table, vectors)) = start {
        artifacts.doc_vectors.push(vectors);
        out.tables.push(("text_embeddings_start.parquet", table));
    }
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

fn sequences(b: &[Example]) -> usize {
    let negatives = if b.iter().all(|e| e.negative.is_some()) { b.len() } else { 0 };
    2 * b.len() + negatives
}

/// The token count of each text of a batch (anchors, positives, hard negatives).
fn lengths<'a>(b: &'a [Example], tokens: &'a [Tokens]) -> impl Iterator<Item = usize> + 'a {
    b.iter().flat_map(|e| [Some(e.anchor), Some(e.positive), e.negative]).flatten().map(|i| tokens[i].ids.len())
}

/// The tokens of a batch's texts.
fn real_tokens(b: &[Example], tokens: &[Tokens]) -> usize {
    lengths(b, tokens).sum()
}

fn max_len(b: &[Example], tokens: &[Tokens]) -> usize {
    lengths(b, tokens).max().unwrap_or(1)
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
        PairSource::Texts { .. } => Err(Error::Internal("pairs asked of a masked-LM plan".into())),
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
    let (table, first, last) = loss_curve(steps, metrics);
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
