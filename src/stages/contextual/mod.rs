//! Contextual document vectors: every document of a text input through a pretrained Transformer encoder, in parts:
//!
//! * `windows.rs`: the corpus in windows of consecutive documents, tokenized ahead and checked, each sorted by
//!   token count into batches under a budget of padded tokens (so padding stays small);
//! * `model.rs`: the encoder on the backend with its memory plan, one forward pass per batch;
//! * `words.rs`: word vectors in context (`contextual.words`, the sense file's words) from the batch's hidden states;
//! * `senses.rs`: `eval.senses`, scored once every document is encoded;
//! * `compare.rs`: `contextual.compare`, the comparison words encoded alone once the documents are;
//! * `writing.rs`: each window written in input order as one row group of `text_embeddings.parquet` (and its
//!   word rows) straight into the run's staging folder.
//!
//! Memory holds the weights, one batch's activations and one window.

mod compare;
mod model;
mod reuse;
mod senses;
mod windows;
mod words;
mod writing;

use std::time::Instant;

pub use windows::{batches, WINDOW_BATCHES};

use super::{Artifacts, Context, DocVectors, StageOutput};
use crate::data::dataset::{Dataset, TextCorpus};
use crate::encoder::{TextTokenizer, WordsParams};
use crate::error::{Error, Result};
use crate::plan::ContextualPlan;
use crate::runtime::metrics::Metrics;
use model::Model;
use reuse::{Reuse, ReuseTally};
use senses::SenseCollector;
use windows::{Window, Windows};
use writing::Writing;

/// What the stage counted as it went.
#[derive(Debug, Default)]
struct Tally {
    /// Every row, with its tokens and truncation, as a run that encodes every row counts them.
    documents: usize,
    tokens: usize,
    truncated: usize,
    /// The rows encoded in this run and their tokens.
    encoded: usize,
    encoded_tokens: usize,
    batches: usize,
    windows: usize,
    /// Word occurrences selected (`words = "all"` stops at its limit).
    occurrences: usize,
    /// Seconds the tokenizing thread worked, and seconds the encoder waited for it.
    tokenize_seconds: f64,
    waited_seconds: f64,
}

/// The windows of the corpus, tokenized one ahead into `tx` (until the receiver hangs up or a window fails); the
/// seconds spent tokenizing.
fn tokenize_ahead(mut windows: Windows<'_>, tx: std::sync::mpsc::SyncSender<Result<Window>>) -> f64 {
    let mut busy = std::time::Duration::ZERO;
    loop {
        let t = Instant::now();
        let next = windows.next_window();
        busy += t.elapsed();
        let done = !matches!(next, Ok(Some(_)));
        let sent = match next {
            Ok(Some(w)) => tx.send(Ok(w)),
            Ok(None) => break,
            Err(e) => tx.send(Err(e)),
        };
        if sent.is_err() || done {
            break;
        }
    }
    busy.as_secs_f64()
}

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    if let Some(set) = ctx.shards {
        return super::merged_vectors::run(ctx, set, artifacts, metrics);
    }
    let plan =
        ctx.plan.contextual.as_ref().ok_or_else(|| Error::Internal("a contextual stage without its plan".into()))?;
    let tuned = tuned_plan(ctx, plan, artifacts);
    let plan = tuned.as_ref().unwrap_or(plan);
    let Dataset::Text(corpus) = artifacts.dataset()? else {
        return Err(Error::Internal("contextual embeddings planned without documents".into()));
    };
    let mut senses = plan.senses.as_ref().map(SenseCollector::open).transpose()?;
    let words = words::wanted(plan.words.as_ref(), senses.as_ref(), plan.folder.config.layers);
    let tokenizer = open_tokenizer(plan)?;
    // The document evaluation needs every document's vector at once: then they are kept, not only streamed.
    let keep = ctx.plan.documents.is_some();
    let window_documents = Windows::max_documents_of(&plan.encode, corpus.texts.len());
    let mut model = Model::open(ctx, plan, words.as_ref(), (window_documents, corpus.texts.len()), keep)?;
    let precision = serde_json::to_value(model.precision().0).map_err(|e| Error::Internal(e.to_string()))?;
    let every_row = words.is_some();
    let mut reuse = Reuse::open(ctx, plan, &precision, &corpus.texts, model.dim(), every_row)?;
    let cache_key = reuse.key().cloned();
    let skip = reuse.skipped();
    let windows = Windows::new(&tokenizer, corpus, &plan.encode, &ctx.plan.input.path, every_row, &skip);
    let mut writing = Writing::create(ctx.out_dir, keep)?;
    ctx.reporter.stage_started("contextual", Some(corpus.texts.len() as u64));
    let started = Instant::now();
    let mut tally = Tally::default();
    // The next window is tokenized on a thread of its own while this one encodes (a channel of one window): the
    // tokenizer keeps ahead of the device instead of taking turns with it.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Window>>(1);
        let tokenizing = scope.spawn(move || tokenize_ahead(windows, tx));
        let mut waited = std::time::Duration::ZERO;
        loop {
            let t = Instant::now();
            let Ok(window) = rx.recv() else { break };
            waited += t.elapsed();
            let window = window?;
            let mut encoded =
                encode_window(ctx, &mut model, &window, words.as_ref(), senses.as_mut(), corpus, &mut tally, started)?;
            let (tokens, truncated) = reuse.complete(&window, &mut encoded.vectors, model.dim())?;
            if tally.truncated == 0 && truncated > 0 {
                ctx.reporter.notice(&format!(
                    "contextual: documents longer than {} tokens are truncated (counted in truncated_documents)",
                    plan.encode.max_tokens
                ));
            }
            tally.documents += window.tokens.len();
            tally.tokens += tokens;
            tally.truncated += truncated;
            writing.write(&window, corpus, ctx.first_row, encoded)?;
            tally.windows += 1;
        }
        drop(rx);
        tally.tokenize_seconds =
            tokenizing.join().map_err(|_| Error::Internal("the tokenizing thread panicked".into()))?;
        tally.waited_seconds = waited.as_secs_f64();
        Ok(())
    })?;
    let (cache, reused) = reuse.finish()?;
    if let Some((store_dir, new)) = cache {
        artifacts.cache_store = Some(store_dir);
        artifacts.cache_segments.extend(new);
    }
    let (mut written, kept) = writing.finish(ctx.reporter, words.as_ref(), tally.occurrences)?;
    if let Some(wp) = words.as_ref().filter(|_| !plan.compare.is_empty()) {
        written.push(compare::write(&mut model, &tokenizer, &plan.compare, wp, ctx.out_dir, metrics)?);
    }
    if let Some(values) = kept {
        artifacts.doc_vectors.push(DocVectors { method: "contextual", dim: model.dim(), values });
    }
    let cache_json = cache_details(plan, cache_key.as_ref(), &reused);
    let summary = Summary { tally, reused, written, cache: cache_json, started };
    finish(ctx, plan, &model, summary, senses, metrics, words.as_ref())
}

/// `contextual.model = "finetuned"`: the plan with the folder the finetune stage wrote (its starting folder's
/// architecture, tokenizer and modules); `None` otherwise.
fn tuned_plan(ctx: &Context<'_>, plan: &ContextualPlan, artifacts: &Artifacts) -> Option<ContextualPlan> {
    let wants = ctx.plan.config.contextual.as_ref().is_some_and(|c| c.model.trim() == crate::plan::FINETUNED);
    let dir = artifacts.finetuned.as_ref().filter(|_| wants)?;
    Some(ContextualPlan {
        folder: crate::encoder::ModelFolder { dir: dir.clone(), ..plan.folder.clone() },
        ..plan.clone()
    })
}

/// What the stage did, for its metrics and summary.
struct Summary {
    tally: Tally,
    reused: ReuseTally,
    written: Vec<(String, usize)>,
    cache: serde_json::Value,
    started: Instant,
}

/// run.json's `cache`: its folder, key and size, or why the run went without it.
fn cache_details(
    plan: &ContextualPlan,
    key: Option<&crate::stages::vector_cache::CacheKey>,
    r: &ReuseTally,
) -> serde_json::Value {
    match (&plan.cache, key) {
        (Ok(c), Some(k)) => serde_json::json!({
            "dir": c.dir,
            "keep_days": c.keep_days,
            "key": k.id,
            "key_parts": k.parts,
            "segments_read": r.segments,
            "entries": r.entries + r.new_entries,
            "bytes": r.bytes + r.new_bytes,
            "new_entries": r.new_entries,
            "row_groups_read": r.groups_read,
        }),
        (Err(why), _) => serde_json::json!({ "off": why }),
        (Ok(_), None) => serde_json::json!({ "off": "contextual.words and eval.senses need every occurrence encoded" }),
    }
}

/// The model folder's tokenizer, refused when it knows more tokens than the model has rows for.
fn open_tokenizer(plan: &ContextualPlan) -> Result<TextTokenizer> {
    let folder = &plan.folder;
    let tokenizer = TextTokenizer::open(&folder.tokenizer_file(), plan.encode.max_tokens)?;
    if tokenizer.vocab_size() > folder.config.vocab_size {
        return Err(Error::input(
            folder.tokenizer_file(),
            None,
            format!("{} tokens, more than the model's vocab_size {}", tokenizer.vocab_size(), folder.config.vocab_size),
        ));
    }
    Ok(tokenizer)
}

/// One window's pooled vectors (in window order) and its word rows.
pub struct WindowVectors {
    pub vectors: Vec<f32>,
    pub token_rows: words::TokenRows,
}

/// Every batch of a window through the encoder: one forward pass per batch for the pooled vectors, and the hidden
/// states when the batch holds a wanted word. A batch without wanted words stays in flight while the next one is
/// recorded and submitted, so the device is not idle while the host takes its vectors.
#[allow(clippy::too_many_arguments)]
fn encode_window(
    ctx: &Context<'_>,
    model: &mut Model<'_>,
    window: &Window,
    words: Option<&WordsParams>,
    mut senses: Option<&mut SenseCollector>,
    corpus: &TextCorpus,
    tally: &mut Tally,
    started: Instant,
) -> Result<WindowVectors> {
    let h = model.dim();
    let lengths = window.lengths();
    // Rows from the cache or duplicates have no tokens: only the rest is batched.
    let rows: Vec<usize> = (0..lengths.len()).filter(|&i| lengths[i] > 0).collect();
    let row_lengths: Vec<usize> = rows.iter().map(|&i| lengths[i]).collect();
    let batches: Vec<Vec<usize>> = batches(&row_lengths, model.batch_tokens())
        .into_iter()
        .map(|b| b.into_iter().map(|j| rows[j]).collect())
        .collect();
    let mut vectors = vec![0f32; window.tokens.len() * h];
    let mut token_rows = words::TokenRows::new(h);
    let mut in_flight: Option<(crate::encoder::PendingVectors, &[usize])> = None;
    let mut done = |batch: &[usize], v: &[f32], tally: &mut Tally| {
        for (i, &d) in batch.iter().enumerate() {
            vectors[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
        }
        tally.encoded += batch.len();
        tally.encoded_tokens += batch.iter().map(|&d| lengths[d]).sum::<usize>();
        let s = started.elapsed().as_secs_f64().max(1e-9);
        ctx.reporter.progress(
            (tally.documents + batch.len()) as u64,
            &format!("{:.0} documents/s, {:.0} tokens/s", tally.encoded as f64 / s, tally.encoded_tokens as f64 / s),
        );
    };
    for batch in &batches {
        crate::runtime::interrupt::check()?;
        let wanted = match words {
            Some(wp) => words::select_words(wp, batch, window, &mut tally.occurrences),
            None => Vec::new(),
        };
        let Some(wp) = words.filter(|_| !wanted.is_empty()) else {
            let next = model.start(batch, window)?;
            if let Some((pending, before)) = in_flight.replace((next, batch)) {
                done(before, &model.finish(pending)?, tally);
            }
            continue;
        };
        let (v, seq, states) = model.encode(batch, window, &wp.layers)?;
        let found = words::word_vectors(&wanted, wp, batch, window, (seq, h), &states, model.static_table());
        if let Some(c) = senses.as_deref_mut() {
            words::keep_sense_vectors(c, &found, batch, window, &corpus.texts, &v, h);
        }
        token_rows.append(found, &corpus.ids);
        done(batch, &v, tally);
    }
    if let Some((pending, last)) = in_flight.take() {
        done(last, &model.finish(pending)?, tally);
    }
    tally.batches += batches.len();
    Ok(WindowVectors { vectors, token_rows })
}

/// The stage's metrics, the sense scores, its summary line and run.json details.
fn finish(
    ctx: &Context<'_>,
    plan: &ContextualPlan,
    model: &Model<'_>,
    done: Summary,
    senses: Option<SenseCollector>,
    metrics: &mut Metrics,
    words: Option<&WordsParams>,
) -> Result<StageOutput> {
    let Summary { tally, reused, written, cache, started } = done;
    if let Some(wp) = words {
        metrics.push("contextual", "word_occurrences", tally.occurrences.min(wp.limit) as f64);
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let (n, tokens) = (tally.documents, tally.tokens);
    for (name, value) in [
        ("documents", n as f64),
        ("tokens", tokens as f64),
        ("truncated_documents", tally.truncated as f64),
        ("encoded", tally.encoded as f64),
        ("encoded_tokens", tally.encoded_tokens as f64),
        ("from_cache", reused.from_cache as f64),
        ("duplicate_texts", reused.duplicates as f64),
        ("batches", tally.batches as f64),
        ("row_groups", tally.windows as f64),
        ("embedding_dim", model.dim() as f64),
        ("seconds", seconds),
        ("documents_per_second", n as f64 / seconds),
        ("tokens_per_second", tally.encoded_tokens as f64 / seconds),
        ("peak_rss_mb", crate::runtime::memory::peak_rss_mb()),
    ] {
        metrics.push("contextual", name, value);
    }
    if cache.get("key").is_some() {
        metrics.push("contextual", "cache_entries", (reused.entries + reused.new_entries) as f64);
        metrics.push("contextual", "cache_bytes", (reused.bytes + reused.new_bytes) as f64);
    }
    let mut summary = format!(
        "{n} documents, {} from the cache, {} encoded ({} duplicates), {tokens} tokens ({} truncated) in {} batches: \
         {:.0} documents/s, {:.0} tokens/s",
        reused.from_cache,
        tally.encoded,
        reused.duplicates,
        tally.truncated,
        tally.batches,
        n as f64 / seconds,
        tally.encoded_tokens as f64 / seconds
    );
    if let Some(c) = senses {
        let parts = c.finish(metrics, ctx.plan.seed)?;
        summary.push_str("; senses: ");
        summary.push_str(&parts.join("; "));
    }
    ctx.reporter.stage_finished("contextual", &summary, seconds);
    let e = &plan.encode;
    let details = serde_json::json!({
        "model": plan.folder.dir,
        "config": model.config(),
        "pooling": e.pooling,
        "normalize": e.normalize,
        "max_tokens": e.max_tokens,
        "batch_tokens": e.batch_tokens,
        "backend": ctx.backend.kind(),
        "precision": model.precision().0,
        "precision_reason": model.precision().1,
        "tokenize_seconds": tally.tokenize_seconds,
        "waited_for_tokens_seconds": tally.waited_seconds,
        "cache": cache,
    });
    Ok(StageOutput { written, summary, details: Some(details), ..StageOutput::default() })
}
