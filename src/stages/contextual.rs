//! Contextual document vectors: every document of a text input through a pretrained Transformer encoder. The corpus
//! goes through in windows of consecutive documents (`WINDOW_BATCHES` batch budgets of tokens each): a window's
//! documents are tokenized, sorted by token count and batched under a budget of padded tokens (so padding stays
//! small), encoded on the backend, and written in input order as one row group of `text_embeddings.parquet`
//! straight into the run's staging folder. Memory holds the weights, one batch's activations and one window.

use std::collections::VecDeque;
use std::time::Instant;

use rayon::prelude::*;

use super::contextual_senses::{SenseCollector, Space};
use super::{Artifacts, Context, StageOutput};
use crate::data::PartWriter;
use crate::data::dataset::Dataset;
use crate::encoder::{Encoder, TextTokenizer, Tokens, WeightsFile, Word};
use crate::error::{Error, Result};
use crate::runtime::memory;
use crate::runtime::metrics::Metrics;
use crate::plan::WordsPlan;
use crate::data::table::{ColumnData, Table};

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

/// A window is this many batch budgets of consecutive documents: tokenized, sorted into batches, encoded and
/// written as one row group of `text_embeddings.parquet`, so memory holds one window, never the corpus' vectors.
pub const WINDOW_BATCHES: usize = 16;

/// Documents tokenized at a time, in parallel, ahead of the windows that take them.
const TOKENIZE_BLOCK: usize = 256;

/// Documents `start..` up to a window's token budget (at least one document), tokenized and checked.
struct Window {
    start: usize,
    tokens: Vec<Tokens>,
    /// Each document's words, when word vectors are asked for.
    words: Vec<Vec<Word>>,
}

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    if let Some(set) = ctx.shards {
        return super::shard_vectors::run(ctx, set, artifacts, metrics);
    }
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
    let mut senses = match &plan.senses {
        Some((path, format)) => Some(SenseCollector::open(path, *format)?),
        None => None,
    };
    // The sense file's words are always written (added to contextual.words, or all hidden states and the static
    // control when words is not set).
    let words_plan: Option<WordsPlan> = match (&plan.words, &senses) {
        (w, None) => w.clone(),
        (Some(w), Some(c)) => {
            let mut w = w.clone();
            if let Some(only) = &mut w.only {
                for word in c.words() {
                    if !only.contains(&word) {
                        only.push(word);
                    }
                }
            }
            Some(w)
        }
        (None, Some(c)) => Some(WordsPlan {
            only: Some(c.words()),
            limit: usize::MAX,
            layers: (0..=config.layers).collect(),
            static_control: true,
        }),
    };
    let want_words = words_plan.is_some();
    let tokenize = |d: usize| -> Result<(Tokens, Vec<Word>)> {
        let (t, words) = if want_words {
            tokenizer.encode_words(&corpus.texts[d])?
        } else {
            (tokenizer.encode(&corpus.texts[d])?, Vec::new())
        };
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
        Ok((t, words))
    };
    let n = corpus.texts.len();
    let window_tokens = plan.batch_tokens.saturating_mul(WINDOW_BATCHES);
    let mut ahead: VecDeque<(Tokens, Vec<Word>)> = VecDeque::new();
    let mut cursor = 0usize;
    // The next window: documents in input order while their tokens fit the window budget. Documents are tokenized
    // ahead in blocks of TOKENIZE_BLOCK, in parallel; the first failing document of a block is the one named.
    let next_window = |cursor: &mut usize, ahead: &mut VecDeque<(Tokens, Vec<Word>)>| -> Result<Option<Window>> {
        let start = *cursor - ahead.len();
        let (mut tokens, mut words, mut sum) = (Vec::new(), Vec::new(), 0usize);
        loop {
            if ahead.is_empty() && *cursor < n {
                let block = *cursor..n.min(*cursor + TOKENIZE_BLOCK);
                let done: Vec<Result<(Tokens, Vec<Word>)>> = block.clone().into_par_iter().map(tokenize).collect();
                for t in done {
                    ahead.push_back(t?);
                }
                *cursor = block.end;
            }
            let Some(t) = ahead.front() else { break };
            if !tokens.is_empty() && sum + t.0.ids.len() > window_tokens {
                break;
            }
            let Some(t) = ahead.pop_front() else { break };
            sum += t.0.ids.len();
            tokens.push(t.0);
            words.push(t.1);
        }
        Ok((!tokens.is_empty()).then_some(Window { start, tokens, words }))
    };

    let weights = WeightsFile::open(&folder.weights_file())?;
    let h = config.hidden_size;
    // A batch holds at most batch_tokens padded tokens, or one document of up to max_tokens.
    let batch_rows = plan.batch_tokens.max(plan.max_tokens);
    let activations = Encoder::workspace_bytes(&config, batch_rows.next_power_of_two(), plan.batch_tokens);
    let window_docs = window_tokens.min(n);
    let mut mem =
        memory::contextual(Encoder::weight_bytes(&config) as u64, activations as u64, window_docs, h, ctx.report.used);
    let static_table = match &words_plan {
        Some(w) if w.static_control => {
            mem.push(memory::Item {
                what: format!("word-piece embeddings for the static control {} × {h} × 4 B", config.vocab_size),
                bytes: (config.vocab_size * h * 4) as u64,
            });
            Some(weights.tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?)
        }
        _ => None,
    };
    // The document evaluation needs every document's vector at once: then they are kept, not only streamed.
    let keep_vectors = ctx.plan.documents.is_some();
    if keep_vectors {
        mem.push(memory::Item {
            what: format!("all {n} document vectors × {h} × 4 B, kept for the document evaluation"),
            bytes: (n * h * 4) as u64,
        });
    }
    ctx.reporter.notice(&memory::describe("contextual", &mem));
    memory::check("contextual", &mem, ctx.plan.max_memory)?;
    let mut encoder = Encoder::new(ctx.backend, config, &weights)?;
    drop(weights);

    let out_name = "text_embeddings.parquet";
    let mut writer = PartWriter::create(&ctx.out_dir.join(out_name))?;
    let mut token_writer: Option<PartWriter> = None;
    let mut occurrences = 0usize;
    let mut kept: Vec<f32> = if keep_vectors { Vec::with_capacity(n * h) } else { Vec::new() };
    ctx.reporter.stage_started("contextual", Some(n as u64));
    let started = Instant::now();
    let (mut done, mut total_tokens, mut truncated, mut batch_count, mut windows) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    while let Some(window) = next_window(&mut cursor, &mut ahead)? {
        let lengths: Vec<usize> = window.tokens.iter().map(|t| t.ids.len()).collect();
        let window_truncated = window.tokens.iter().filter(|t| t.truncated).count();
        if truncated == 0 && window_truncated > 0 {
            ctx.reporter.notice(&format!(
                "contextual: documents longer than {} tokens are truncated (counted in truncated_documents)",
                plan.max_tokens
            ));
        }
        truncated += window_truncated;
        let batches = batches(&lengths, plan.batch_tokens);
        let mut vectors = vec![0f32; window.tokens.len() * h];
        let mut token_rows = TokenRows::new(h);
        for batch in &batches {
            crate::runtime::interrupt::check()?;
            let docs: Vec<Tokens> = batch.iter().map(|&d| window.tokens[d].clone()).collect();
            // One forward pass per batch: the pooled vectors, and the hidden states when it holds a wanted word.
            let wanted = match &words_plan {
                Some(wp) => select_words(wp, batch, &window, &mut occurrences),
                None => Vec::new(),
            };
            let layers = match &words_plan {
                Some(wp) if !wanted.is_empty() => wp.layers.as_slice(),
                _ => &[],
            };
            let (v, seq, states) = encoder.embed_keeping(&docs, plan.pooling, plan.normalize, layers)?;
            for (i, &d) in batch.iter().enumerate() {
                vectors[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
            }
            if let (Some(wp), false) = (&words_plan, wanted.is_empty()) {
                let found = word_vectors(&wanted, wp, batch, &window, (seq, h), &states, static_table.as_deref());
                if let Some(c) = senses.as_mut() {
                    keep_sense_vectors(c, &found, batch, &window, &corpus.texts, &v, h);
                }
                token_rows.append(found, &corpus.ids);
            }
            done += batch.len();
            total_tokens += batch.iter().map(|&d| lengths[d]).sum::<usize>();
            let s = started.elapsed().as_secs_f64().max(1e-9);
            ctx.reporter.progress(
                done as u64,
                &format!("{:.0} documents/s, {:.0} tokens/s", done as f64 / s, total_tokens as f64 / s),
            );
        }
        let rows = window.start..window.start + window.tokens.len();
        if keep_vectors {
            kept.extend_from_slice(&vectors);
        }
        writer.write(&Table::new(vec![
            ("row_id", ColumnData::I64(rows.clone().map(|r| (ctx.first_row + r) as i64).collect())),
            ("row", ColumnData::Str(corpus.ids[rows].to_vec())),
            ("vector", ColumnData::Vectors { dim: h, values: vectors }),
        ]))?;
        batch_count += batches.len();
        windows += 1;
        if !token_rows.is_empty() {
            if token_writer.is_none() {
                token_writer = Some(PartWriter::create(&ctx.out_dir.join(TOKENS_FILE))?);
            }
            if let Some(tw) = token_writer.as_mut() {
                tw.write(&token_rows.into_table())?;
            }
        }
    }
    let written = writer.finish()?;
    let mut written_files = vec![(out_name.to_owned(), written)];
    if let Some(wp) = &words_plan {
        match token_writer {
            Some(tw) => written_files.push((TOKENS_FILE.to_owned(), tw.finish()?)),
            None => ctx
                .reporter
                .notice("contextual: no document has any of contextual.words; token_embeddings.parquet is not written"),
        }
        if wp.only.is_none() && occurrences >= wp.limit {
            ctx.reporter
                .notice(&format!("contextual: word vectors stop at contextual.words_limit = {} occurrences", wp.limit));
        }
        metrics.push("contextual", "word_occurrences", occurrences.min(wp.limit) as f64);
    }
    if keep_vectors {
        artifacts.doc_vectors.push(super::DocVectors { method: "contextual", dim: h, values: kept });
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    metrics.push("contextual", "documents", n as f64);
    metrics.push("contextual", "tokens", total_tokens as f64);
    metrics.push("contextual", "truncated_documents", truncated as f64);
    metrics.push("contextual", "batches", batch_count as f64);
    metrics.push("contextual", "row_groups", windows as f64);
    metrics.push("contextual", "embedding_dim", h as f64);
    metrics.push("contextual", "seconds", seconds);
    metrics.push("contextual", "documents_per_second", n as f64 / seconds);
    metrics.push("contextual", "tokens_per_second", total_tokens as f64 / seconds);
    metrics.push("contextual", "peak_rss_mb", crate::job::run_record::peak_rss_mb());
    let mut summary = format!(
        "{n} documents, {total_tokens} tokens ({truncated} truncated) in {batch_count} batches: {:.0} documents/s, {:.0} tokens/s",
        n as f64 / seconds,
        total_tokens as f64 / seconds
    );
    if let Some(c) = senses {
        let parts = c.finish(metrics, ctx.plan.seed)?;
        summary.push_str("; senses: ");
        summary.push_str(&parts.join("; "));
    }
    ctx.reporter.stage_finished("contextual", &summary, seconds);
    let details = serde_json::json!({
        "model": folder.dir,
        "config": encoder.config,
        "pooling": plan.pooling,
        "normalize": plan.normalize,
        "max_tokens": plan.max_tokens,
        "batch_tokens": plan.batch_tokens,
        "backend": ctx.backend.kind(),
    });
    Ok(StageOutput { written: written_files, summary, details: Some(details), ..StageOutput::default() })
}

/// The token-level output: every kept word occurrence at every asked hidden state, and its static control.
const TOKENS_FILE: &str = "token_embeddings.parquet";

/// Rows of `token_embeddings.parquet` for one window.
struct TokenRows {
    dim: usize,
    row_id: Vec<i64>,
    row: Vec<String>,
    word: Vec<String>,
    position: Vec<i32>,
    layer: Vec<Option<i64>>,
    kind: Vec<String>,
    vectors: Vec<f32>,
}

/// One word row: the document (index in the corpus), the word, its position, the hidden state (None: the static
/// control) and the vector.
struct FoundRow {
    doc: usize,
    word: String,
    position: usize,
    layer: Option<usize>,
    vector: Vec<f32>,
}

/// One batch's word rows, by document, then position.
struct FoundRows(Vec<FoundRow>);

impl TokenRows {
    fn new(dim: usize) -> TokenRows {
        TokenRows {
            dim,
            row_id: Vec::new(),
            row: Vec::new(),
            word: Vec::new(),
            position: Vec::new(),
            layer: Vec::new(),
            kind: Vec::new(),
            vectors: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.row_id.is_empty()
    }

    fn append(&mut self, found: FoundRows, ids: &[String]) {
        for FoundRow { doc, word, position, layer, vector: v } in found.0 {
            self.row_id.push(doc as i64);
            self.row.push(ids[doc].clone());
            self.word.push(word);
            self.position.push(position as i32);
            self.layer.push(layer.map(|l| l as i64));
            self.kind.push(if layer.is_some() { "hidden" } else { "static" }.to_owned());
            self.vectors.extend(v);
        }
    }

    fn into_table(self) -> Table {
        Table::new(vec![
            ("row_id", ColumnData::I64(self.row_id)),
            ("row", ColumnData::Str(self.row)),
            ("word", ColumnData::Str(self.word)),
            ("position", ColumnData::I32(self.position)),
            ("layer", ColumnData::OptI64(self.layer)),
            ("kind", ColumnData::Str(self.kind)),
            ("vector", ColumnData::Vectors { dim: self.dim, values: self.vectors }),
        ])
    }
}

/// The wanted word occurrences of one batch (documents `batch`, indices into the window), sorted by document, then
/// position: (slot in the batch, position in its document, word). With `words = "all"` they count towards the limit.
fn select_words<'w>(
    wp: &WordsPlan,
    batch: &[usize],
    window: &'w Window,
    occurrences: &mut usize,
) -> Vec<(usize, usize, &'w Word)> {
    let mut wanted = Vec::new();
    let mut order: Vec<(usize, usize)> = batch.iter().enumerate().map(|(slot, &d)| (d, slot)).collect();
    order.sort_unstable();
    for &(d, slot) in &order {
        for (position, w) in window.words[d].iter().enumerate() {
            let keep = match &wp.only {
                Some(list) => list.contains(&w.text),
                None => *occurrences < wp.limit,
            };
            if keep && !w.pieces.is_empty() {
                *occurrences += 1;
                wanted.push((slot, position, w));
            }
        }
    }
    wanted
}

/// The rows of the `wanted` words from the batch's hidden states (`states[i]` is hidden state `wp.layers[i]`, batch
/// · `seq` × `h`): the mean of each word's pieces at every asked hidden state (summed in f64), then its static
/// control (the mean of its pieces' word-embedding rows alone).
#[allow(clippy::too_many_arguments)]
fn word_vectors(
    wanted: &[(usize, usize, &Word)],
    wp: &WordsPlan,
    batch: &[usize],
    window: &Window,
    (seq, h): (usize, usize),
    states: &[Vec<f32>],
    static_table: Option<&[f32]>,
) -> FoundRows {
    let mean = |rows: &mut dyn Iterator<Item = &[f32]>| -> Vec<f32> {
        let mut acc = vec![0f64; h];
        let mut n = 0usize;
        for r in rows {
            for (a, &v) in acc.iter_mut().zip(r) {
                *a += f64::from(v);
            }
            n += 1;
        }
        acc.iter().map(|&a| (a / n.max(1) as f64) as f32).collect()
    };
    let mut out = Vec::with_capacity(wanted.len() * (wp.layers.len() + 1));
    for &(slot, position, w) in wanted {
        let doc = window.start + batch[slot];
        for (state, &layer) in states.iter().zip(&wp.layers) {
            let v = mean(&mut w.pieces.clone().map(|t| &state[(slot * seq + t) * h..(slot * seq + t + 1) * h]));
            out.push(FoundRow { doc, word: w.text.clone(), position, layer: Some(layer), vector: v });
        }
        if let Some(table) = static_table {
            let ids = &window.tokens[batch[slot]].ids;
            let v = mean(&mut w.pieces.clone().map(|t| &table[ids[t] as usize * h..(ids[t] as usize + 1) * h]));
            out.push(FoundRow { doc, word: w.text.clone(), position, layer: None, vector: v });
        }
    }
    FoundRows(out)
}

/// Keeps the vectors of the sense file's rows found in this batch: each row's word at its first position in its
/// document, at every hidden state and as the static control, and the document's pooled vector (`pooled`: the
/// batch's vectors, in batch order).
fn keep_sense_vectors(
    c: &mut SenseCollector,
    found: &FoundRows,
    batch: &[usize],
    window: &Window,
    texts: &[String],
    pooled: &[f32],
    h: usize,
) {
    for (slot, &d) in batch.iter().enumerate() {
        let doc = window.start + d;
        for (row, position) in c.take(&texts[doc], &window.words[d]) {
            let word = c.word(row).to_owned();
            let hits: Vec<(Space, Vec<f32>)> = found
                .0
                .iter()
                .filter(|f| f.doc == doc && f.position == position && f.word == word)
                .map(|f| (f.layer.map_or(Space::Static, Space::Layer), f.vector.clone()))
                .collect();
            for (space, v) in hits {
                c.keep(row, space, v);
            }
            c.keep(row, Space::Document, pooled[slot * h..(slot + 1) * h].to_vec());
        }
    }
}
