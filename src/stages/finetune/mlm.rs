//! Fine-tuning with BERT's masked language model (domain adaptation) on the input's own documents: a seeded share
//! of the documents held out, the rest cut into pieces of at most `max_tokens` tokens (the tokenizer's overflowing
//! pieces, so nothing of a long document is lost), shuffled and masked afresh every epoch (as `transformers`'
//! collator does), `batch_size` pieces a step. The held-out pieces are masked once, with their own seed, and scored
//! by the starting model and the trained one alike: the mean loss and the accuracy of the most likely token over
//! the chosen word pieces. A folder without a prediction head gets a fresh, seeded one (a notice says so). The
//! model folder is written as `BertForMaskedLM` saves it (the encoder under "bert.", the head beside it), which
//! `AutoModel`, `AutoModelForMaskedLM` and sentence-transformers load.

use std::time::Instant;

use super::super::{Artifacts, Context, StageOutput};
use super::common::{check_memory, loss_curve, save, start_vectors, MODEL_DIR, STAGE};
use crate::data::dataset::Dataset;
use crate::encoder::{TextTokenizer, Tokens, WeightsFile};
use crate::error::{Error, Result};
use crate::finetune::{held_out, mask_sequence, MaskedBatch, MaskedLm, Masking, MlmScore, MlmTrainer, StepReport};
use crate::linalg::rng::SplitMix;
use crate::plan::{FinetunePlan, PairSource};
use crate::runtime::memory::{self, Item};
use crate::runtime::metrics::Metrics;

/// A piece of a document: its tokens and which are special.
type Piece = (Tokens, Vec<bool>);

/// The held-out pieces' score before and after.
#[derive(Debug, Clone, Copy, Default)]
struct HeldOut {
    start: MlmScore,
    tuned: MlmScore,
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
    let PairSource::Texts { holdout, split_seed } = plan.pairs else {
        return Err(Error::Internal("a masked-LM plan without its documents".into()));
    };
    let tokenizer = TextTokenizer::open(&plan.folder.tokenizer_file(), plan.max_tokens)?;
    let masking = masking(&tokenizer, plan)?;
    let all: Vec<usize> = (0..corpus.texts.len()).collect();
    let held = held_out(&all, holdout, split_seed);
    let (train_pieces, held_pieces) = pieces(&tokenizer, &corpus.texts, &held)?;
    let per_epoch = train_pieces.len().div_ceil(plan.batch_size);
    if per_epoch == 0 {
        return Err(Error::Stage {
            stage: STAGE,
            message: "no document is left to train on after the hold-out".into(),
        });
    }
    let total = per_epoch * plan.epochs;
    let weights = WeightsFile::open(&plan.folder.weights_file())?;
    // A batch's most padded rows and real tokens: `batch_size` of the longest pieces.
    let mut lens: Vec<usize> = train_pieces.iter().chain(&held_pieces).map(|(t, _)| t.ids.len()).collect();
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let longest = lens.first().copied().unwrap_or(1);
    let real = lens.iter().take(plan.batch_size).sum::<usize>();
    let mut trainer = trainer(ctx, plan, &weights, (plan.batch_size * longest, real), total)?;
    let start = start_vectors(ctx, plan, &weights, corpus)?;
    let held_batches = held_out_batches(&held_pieces, plan, &masking);
    let mut score = HeldOut { start: evaluate(&mut trainer, &held_batches)?, ..HeldOut::default() };
    let (steps, seconds) = train(ctx, plan, &mut trainer, &train_pieces, &masking, total)?;
    score.tuned = evaluate(&mut trainer, &held_batches)?;
    let dir = ctx.out_dir.join(MODEL_DIR);
    let trained = trainer.net.weights.export(ctx.backend)?;
    let extra = serde_json::json!({
        "mlm_probability": plan.mlm_probability,
        "fresh_head": trainer.fresh_head,
        "held_out_mlm_loss": [mean_loss(&score.start), mean_loss(&score.tuned)],
        "held_out_mlm_accuracy": [accuracy(&score.start), accuracy(&score.tuned)],
    });
    save(ctx, plan, &trained, &steps, extra, &dir)?;
    artifacts.finetuned = Some(dir);
    artifacts.held_out = Some(held.clone());
    let counts =
        Counts { documents: all.len() - held.len(), held: held.len(), pieces: train_pieces.len(), epochs: plan.epochs };
    let mut out = finish(ctx, counts, &steps, seconds, score, metrics)?;
    if let Some((table, vectors)) = start {
        artifacts.doc_vectors.push(vectors);
        out.tables.push(("text_embeddings_start.parquet", table));
    }
    Ok(out)
}

/// How this folder's vocabulary masks: refused (naming the tokenizer file) without a [MASK] token.
fn masking(tokenizer: &TextTokenizer, plan: &FinetunePlan) -> Result<Masking> {
    let mask_id = tokenizer.token_id("[MASK]").ok_or_else(|| {
        Error::input(tokenizer.path(), None, "objective = \"mlm\" needs a [MASK] token, which this vocabulary lacks")
    })?;
    Ok(Masking {
        probability: plan.mlm_probability,
        mask_id,
        vocab: tokenizer.vocab_size().min(plan.folder.config.vocab_size),
    })
}

/// Every document's pieces (a piece with no word piece left out), those of the training documents and those of
/// the held-out ones (`held`, ascending).
fn pieces(tokenizer: &TextTokenizer, texts: &[String], held: &[usize]) -> Result<(Vec<Piece>, Vec<Piece>)> {
    let (mut train, mut kept) = (Vec::new(), Vec::new());
    for (d, text) in texts.iter().enumerate() {
        let pieces = tokenizer.encode_pieces(text)?.into_iter().filter(|(_, special)| special.iter().any(|s| !s));
        if held.binary_search(&d).is_ok() {
            kept.extend(pieces);
        } else {
            train.extend(pieces);
        }
    }
    Ok((train, kept))
}

/// The trainer, once the memory plan for batches of up to `rows` padded rows holding up to `tokens` tokens (every
/// one of them chosen, at worst) is stated and within `job.max_memory`; a notice when the prediction head is fresh.
fn trainer<'b>(
    ctx: &Context<'b>,
    plan: &FinetunePlan,
    weights: &WeightsFile,
    (rows, tokens): (usize, usize),
    total: usize,
) -> Result<MlmTrainer<'b>> {
    let c = &plan.folder.config;
    let loss_item = Item {
        what: format!("the prediction head's logits ({tokens} chosen tokens at most, {} word pieces)", c.vocab_size),
        bytes: MaskedLm::bytes(c.hidden_size, c.vocab_size, tokens) as u64,
    };
    check_memory(ctx, plan, (rows, tokens), Some(loss_item))?;
    let mut trainer = MlmTrainer::new(ctx.backend, c.clone(), weights, plan.optimizer, total, plan.seed)?;
    trainer.net.reserve(rows, tokens)?;
    trainer.net.set_dropout(plan.dropout, plan.seed);
    if trainer.fresh_head {
        ctx.reporter.notice(&format!(
            "{STAGE}: {} has no masked-LM head (cls.predictions); training a fresh one drawn with seed {}",
            plan.folder.weights_file().display(),
            plan.seed
        ));
    }
    Ok(trainer)
}

/// Masks `pieces` in batches of the plan's size, each piece with the next draws of `rng`; a batch in which no
/// word piece was chosen gets its first one chosen (the loss needs one).
fn masked_batches(pieces: &[&Piece], batch: usize, m: &Masking, rng: &mut SplitMix) -> Vec<MaskedBatch> {
    pieces
        .chunks(batch.max(1))
        .map(|chunk| {
            let mut b = MaskedBatch { tokens: Vec::new(), labels: Vec::new() };
            for (tokens, special) in chunk {
                let (t, l) = mask_sequence(tokens, special, m, rng);
                b.tokens.push(t);
                b.labels.push(l);
            }
            if b.labels.iter().flatten().all(|&l| l == crate::finetune::NOT_CHOSEN) {
                let (tokens, special) = chunk[0];
                if let Some(t) = special.iter().position(|s| !s) {
                    b.labels[0][t] = i64::from(tokens.ids[t]);
                    b.tokens[0].ids[t] = m.mask_id;
                }
            }
            b
        })
        .collect()
}

/// The held-out pieces, masked once with their own seed (the same masks score the start and the end).
fn held_out_batches(pieces: &[Piece], plan: &FinetunePlan, m: &Masking) -> Vec<MaskedBatch> {
    let refs: Vec<&Piece> = pieces.iter().collect();
    masked_batches(&refs, plan.batch_size, m, &mut SplitMix::new(plan.seed ^ 0x6865_6c64_5f6f_7574))
}

fn evaluate(trainer: &mut MlmTrainer<'_>, batches: &[MaskedBatch]) -> Result<MlmScore> {
    let mut total = MlmScore::default();
    for b in batches {
        crate::runtime::interrupt::check()?;
        let s = trainer.evaluate(b)?;
        total.loss_sum += s.loss_sum;
        total.chosen += s.chosen;
        total.correct += s.correct;
    }
    Ok(total)
}

fn mean_loss(s: &MlmScore) -> f64 {
    if s.chosen == 0 {
        f64::NAN
    } else {
        s.loss_sum / s.chosen as f64
    }
}

fn accuracy(s: &MlmScore) -> f64 {
    if s.chosen == 0 {
        f64::NAN
    } else {
        s.correct as f64 / s.chosen as f64
    }
}

/// Every epoch's pieces, shuffled and masked afresh, through the trainer.
fn train(
    ctx: &Context<'_>,
    plan: &FinetunePlan,
    trainer: &mut MlmTrainer<'_>,
    pieces: &[Piece],
    masking: &Masking,
    total: usize,
) -> Result<(Vec<StepReport>, f64)> {
    ctx.reporter.stage_started(STAGE, Some(total as u64));
    let started = Instant::now();
    let mut steps: Vec<StepReport> = Vec::with_capacity(total);
    let mut rng = SplitMix::new(plan.seed ^ 0x6d6c_6d5f_7472_6169);
    for _ in 0..plan.epochs {
        let mut order: Vec<&Piece> = pieces.iter().collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for batch in masked_batches(&order, plan.batch_size, masking, &mut rng) {
            crate::runtime::interrupt::check()?;
            let r = trainer.step(&batch)?;
            if !r.loss.is_finite() {
                return Err(Error::Stage {
                    stage: STAGE,
                    message: format!("the loss became {} at step {}", r.loss, steps.len() + 1),
                });
            }
            steps.push(r);
            let s = started.elapsed().as_secs_f64().max(1e-9);
            ctx.reporter
                .progress(steps.len() as u64, &format!("loss {:.4}, {:.1} steps/s", r.loss, steps.len() as f64 / s));
        }
    }
    Ok((steps, started.elapsed().as_secs_f64()))
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    documents: usize,
    held: usize,
    pieces: usize,
    epochs: usize,
}

/// The loss curve's table, the stage's metrics and summary.
fn finish(
    ctx: &Context<'_>,
    counts: Counts,
    steps: &[StepReport],
    seconds: f64,
    score: HeldOut,
    metrics: &mut Metrics,
) -> Result<StageOutput> {
    let n = steps.len();
    let tokens: usize = steps.iter().map(|s| s.tokens).sum();
    let (table, first, last) = loss_curve(steps, metrics);
    for (name, value) in [
        ("steps", n as f64),
        ("documents_trained", counts.documents as f64),
        ("pieces", counts.pieces as f64),
        ("held_out_documents", counts.held as f64),
        ("first_loss", first),
        ("last_loss", last),
        ("seconds", seconds),
        ("sequences_per_second", (counts.pieces * counts.epochs) as f64 / seconds.max(1e-9)),
        ("tokens_per_second", tokens as f64 / seconds.max(1e-9)),
        ("held_out_masked_tokens", score.start.chosen as f64),
        ("held_out_mlm_loss_start", mean_loss(&score.start)),
        ("held_out_mlm_loss_tuned", mean_loss(&score.tuned)),
        ("held_out_mlm_accuracy_start", accuracy(&score.start)),
        ("held_out_mlm_accuracy_tuned", accuracy(&score.tuned)),
        ("peak_rss_mb", memory::peak_rss_mb()),
    ] {
        metrics.push(STAGE, name, value);
    }
    let summary = format!(
        "masked LM: {n} steps on {} pieces of {} documents in {seconds:.1} s ({:.0} tokens/s): loss {first:.4} → \
         {last:.4}; {} held-out documents, masked-token loss {:.4} → {:.4}, accuracy {:.4} → {:.4}; model in {MODEL_DIR}/",
        counts.pieces,
        counts.documents,
        tokens as f64 / seconds.max(1e-9),
        counts.held,
        mean_loss(&score.start),
        mean_loss(&score.tuned),
        accuracy(&score.start),
        accuracy(&score.tuned),
    );
    ctx.reporter.stage_finished(STAGE, &summary, seconds);
    Ok(StageOutput {
        tables: vec![("finetune_loss.parquet", table)],
        summary,
        written: vec![(format!("{MODEL_DIR}/"), 1)],
        ..StageOutput::default()
    })
}
