//! The corpus in windows of consecutive documents: each window holds up to [`WINDOW_BATCHES`] batch budgets of
//! tokens, tokenized (ahead, in parallel blocks) and checked; within a window, documents are sorted by token count
//! into batches under the budget of padded tokens ([`batches`]), so padding stays small.

use std::collections::VecDeque;

use rayon::prelude::*;

use crate::data::dataset::TextCorpus;
use crate::encoder::{EncodeParams, TextTokenizer, Tokens, Word};
use crate::error::{Error, Result};

/// A window is this many batch budgets of consecutive documents: tokenized, sorted into batches, encoded and
/// written as one row group of `text_embeddings.parquet`, so memory holds one window, never the corpus' vectors.
pub const WINDOW_BATCHES: usize = 16;

/// Documents tokenized at a time, in parallel, ahead of the windows that take them.
const TOKENIZE_BLOCK: usize = 256;

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

/// Documents `start..start + tokens.len()`, tokenized and checked (a row not encoded in this run has no tokens).
pub struct Window {
    pub start: usize,
    pub tokens: Vec<Tokens>,
    /// Each document's words, when word vectors are asked for (empty lists otherwise).
    pub words: Vec<Vec<Word>>,
}

impl Window {
    /// Each document's token count.
    pub fn lengths(&self) -> Vec<usize> {
        self.tokens.iter().map(|t| t.ids.len()).collect()
    }
}

/// The windows of a corpus, in input order.
pub struct Windows<'a> {
    tokenizer: &'a TextTokenizer,
    corpus: &'a TextCorpus,
    params: &'a EncodeParams,
    /// The input, named in errors.
    input: &'a std::path::Path,
    want_words: bool,
    /// Rows not encoded in this run (from the cache, or duplicates): not tokenized, one token of the budget each.
    skip: &'a [bool],
    /// Tokens per window.
    budget: usize,
    /// Documents tokenized ahead of the next window, and the first document not tokenized yet.
    ahead: VecDeque<(Tokens, Vec<Word>)>,
    cursor: usize,
}

impl<'a> Windows<'a> {
    pub fn new(
        tokenizer: &'a TextTokenizer,
        corpus: &'a TextCorpus,
        params: &'a EncodeParams,
        input: &'a std::path::Path,
        want_words: bool,
        skip: &'a [bool],
    ) -> Windows<'a> {
        let budget = params.batch_tokens.saturating_mul(WINDOW_BATCHES);
        Windows { tokenizer, corpus, params, input, want_words, skip, budget, ahead: VecDeque::new(), cursor: 0 }
    }

    /// Documents in a window at most (the memory plan's window of vectors), for a corpus of `n`.
    pub fn max_documents_of(params: &EncodeParams, n: usize) -> usize {
        params.batch_tokens.saturating_mul(WINDOW_BATCHES).min(n)
    }

    /// The next window: documents in input order while their tokens fit the window's budget (at least one).
    pub fn next_window(&mut self) -> Result<Option<Window>> {
        let start = self.cursor - self.ahead.len();
        let (mut tokens, mut words, mut sum) = (Vec::new(), Vec::new(), 0usize);
        loop {
            if self.ahead.is_empty() {
                self.tokenize_block()?;
            }
            let Some(t) = self.ahead.front() else { break };
            if !tokens.is_empty() && sum + t.0.ids.len().max(1) > self.budget {
                break;
            }
            let Some(t) = self.ahead.pop_front() else { break };
            sum += t.0.ids.len().max(1);
            tokens.push(t.0);
            words.push(t.1);
        }
        Ok((!tokens.is_empty()).then_some(Window { start, tokens, words }))
    }

    /// The next block of documents, tokenized in parallel; the first failing document of the block is the one named.
    fn tokenize_block(&mut self) -> Result<()> {
        let n = self.corpus.texts.len();
        if self.cursor >= n {
            return Ok(());
        }
        let block = self.cursor..n.min(self.cursor + TOKENIZE_BLOCK);
        let done: Vec<Result<(Tokens, Vec<Word>)>> = block.clone().into_par_iter().map(|d| self.tokenize(d)).collect();
        for t in done {
            self.ahead.push_back(t?);
        }
        self.cursor = block.end;
        Ok(())
    }

    /// Document `d`'s tokens (and words), refused when it has none or is too long without `truncate`.
    fn tokenize(&self, d: usize) -> Result<(Tokens, Vec<Word>)> {
        if self.skip.get(d).copied().unwrap_or(false) {
            return Ok((Tokens { ids: Vec::new(), type_ids: Vec::new(), truncated: false }, Vec::new()));
        }
        let text = &self.corpus.texts[d];
        let (t, words) = if self.want_words {
            self.tokenizer.encode_words(text)?
        } else {
            (self.tokenizer.encode(text)?, Vec::new())
        };
        let id = &self.corpus.ids[d];
        if t.ids.is_empty() {
            return Err(Error::input(
                self.input,
                None,
                format!("document '{id}' has no tokens for this model's tokenizer"),
            ));
        }
        if t.truncated && !self.params.truncate {
            return Err(Error::input(
                self.input,
                None,
                format!(
                    "document '{id}' is longer than contextual.max_tokens = {} tokens (set contextual.truncate = true to cut it)",
                    self.params.max_tokens
                ),
            ));
        }
        Ok((t, words))
    }
}
