//! Contextual document vectors: every document of a text input through a pretrained Transformer encoder. The
//! documents are tokenized, sorted by token count and batched under a budget of padded tokens (so padding stays
//! small), encoded on the backend, and written back in input order as `text_embeddings.parquet`.

use std::time::Instant;

use super::{Artifacts, Context, StageOutput};
use crate::dataset::Dataset;
use crate::encoder::{Encoder, TextTokenizer, Tokens, WeightsFile};
use crate::error::{Error, Result};
use crate::memory;
use crate::metrics::Metrics;
use crate::table::{ColumnData, Table};

/// Batches of document indices (sorted by token count) whose padded size stays within `budget` tokens.
pub fn batches(lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&d| (lengths[d], d));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for d in order {
        // Sorted ascending, so this document is the longest of the batch it joins.
        if !current.is_empty() && (current.len() + 1) * lengths[d] > budget {
            out.push(std::mem::take(&mut current));
        }
        current.push(d);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan =
        ctx.plan.contextual.as_ref().ok_or_else(|| Error::Internal("a contextual stage without its plan".into()))?;
    let Dataset::Text(corpus) = artifacts.dataset()? else {
        return Err(Error::Internal("contextual embeddings planned without documents".into()));
    };
    let folder = &plan.folder;
    let config = folder.config.clone();
    let tokenizer = TextTokenizer::open(&folder.tokenizer_file(), plan.max_tokens)?;
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(Error::input(
            folder.tokenizer_file(),
            None,
            format!("{} tokens, more than the model's vocab_size {}", tokenizer.vocab_size(), config.vocab_size),
        ));
    }
    let mut tokens: Vec<Tokens> = Vec::with_capacity(corpus.texts.len());
    for (d, text) in corpus.texts.iter().enumerate() {
        let t = tokenizer.encode(text)?;
        if t.ids.is_empty() {
            return Err(Error::input(
                &ctx.plan.input.path,
                None,
                format!("document '{}' has no tokens for this model's tokenizer", corpus.ids[d]),
            ));
        }
        if t.truncated && !plan.truncate {
            return Err(Error::input(
                &ctx.plan.input.path,
                None,
                format!(
                    "document '{}' is longer than contextual.max_tokens = {} tokens (set contextual.truncate = true to cut it)",
                    corpus.ids[d], plan.max_tokens
                ),
            ));
        }
        tokens.push(t);
    }
    let truncated = tokens.iter().filter(|t| t.truncated).count();
    if truncated > 0 {
        ctx.reporter.notice(&format!(
            "contextual: {truncated} documents are longer than {} tokens and were truncated",
            plan.max_tokens
        ));
    }
    let lengths: Vec<usize> = tokens.iter().map(|t| t.ids.len()).collect();
    let batches = batches(&lengths, plan.batch_tokens);
    let widest = batches.iter().map(|b| b.len()).max().unwrap_or(1);

    let weights = WeightsFile::open(&folder.weights_file())?;
    let h = config.hidden_size;
    let activations = Encoder::workspace_bytes(&config, plan.batch_tokens.next_power_of_two(), widest);
    let mem =
        memory::contextual(Encoder::weight_bytes(&config) as u64, activations as u64, tokens.len(), h, ctx.report.used);
    ctx.reporter.notice(&memory::describe("contextual", &mem));
    memory::check("contextual", &mem, ctx.plan.max_memory)?;
    let mut encoder = Encoder::new(ctx.backend, config, &weights)?;
    drop(weights);

    ctx.reporter.stage_started("contextual", Some(tokens.len() as u64));
    let started = Instant::now();
    let mut vectors = vec![0f32; tokens.len() * h];
    let (mut done, mut done_tokens) = (0usize, 0usize);
    for batch in &batches {
        crate::interrupt::check()?;
        let docs: Vec<Tokens> = batch.iter().map(|&d| tokens[d].clone()).collect();
        let v = encoder.embed(&docs, plan.pooling, plan.normalize)?;
        for (i, &d) in batch.iter().enumerate() {
            vectors[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
        }
        done += batch.len();
        done_tokens += batch.iter().map(|&d| lengths[d]).sum::<usize>();
        let s = started.elapsed().as_secs_f64().max(1e-9);
        ctx.reporter.progress(
            done as u64,
            &format!("{:.0} documents/s, {:.0} tokens/s", done as f64 / s, done_tokens as f64 / s),
        );
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let total_tokens: usize = lengths.iter().sum();
    metrics.push("contextual", "documents", tokens.len() as f64);
    metrics.push("contextual", "tokens", total_tokens as f64);
    metrics.push("contextual", "truncated_documents", truncated as f64);
    metrics.push("contextual", "batches", batches.len() as f64);
    metrics.push("contextual", "embedding_dim", h as f64);
    metrics.push("contextual", "seconds", seconds);
    metrics.push("contextual", "documents_per_second", tokens.len() as f64 / seconds);
    metrics.push("contextual", "tokens_per_second", total_tokens as f64 / seconds);
    metrics.push("contextual", "peak_rss_mb", crate::run_record::peak_rss_mb());
    let summary = format!(
        "{} documents, {} tokens ({truncated} truncated) in {} batches: {:.0} documents/s, {:.0} tokens/s",
        tokens.len(),
        total_tokens,
        batches.len(),
        tokens.len() as f64 / seconds,
        total_tokens as f64 / seconds
    );
    ctx.reporter.stage_finished("contextual", &summary, seconds);
    let table = Table::new(vec![
        ("row_id", ColumnData::I64((0..corpus.ids.len() as i64).collect())),
        ("row", ColumnData::Str(corpus.ids.clone())),
        ("vector", ColumnData::Vectors { dim: h, values: vectors }),
    ]);
    let details = serde_json::json!({
        "model": folder.dir,
        "config": encoder.config,
        "pooling": plan.pooling,
        "normalize": plan.normalize,
        "max_tokens": plan.max_tokens,
        "batch_tokens": plan.batch_tokens,
        "backend": ctx.backend.kind(),
    });
    Ok(StageOutput {
        tables: vec![("text_embeddings.parquet", table)],
        summary,
        details: Some(details),
        ..StageOutput::default()
    })
}
