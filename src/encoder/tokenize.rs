//! Text to token ids with the model's own `tokenizer.json` (Hugging Face's `tokenizers`), as sentence-transformers
//! does: the file's own padding and truncation settings are switched off, special tokens added, and a text longer
//! than `max_tokens` (special tokens included) truncated the tokenizer's way, or refused.

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{Error, Result};

/// One text's tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether the text was longer than the limit and was cut.
    pub truncated: bool,
}

/// One word of a text: its lowercased form and the token positions of its word pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub pieces: std::ops::Range<usize>,
}

/// A model's tokenizer.
pub struct TextTokenizer {
    path: PathBuf,
    tokenizer: Tokenizer,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, truncating to `max_tokens` (special tokens included).
    pub fn open(path: &Path, max_tokens: usize) -> Result<TextTokenizer> {
        let mut tokenizer = Tokenizer::from_file(path)
            .map_err(|e| Error::input(path, None, format!("not a tokenizer file this version reads: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| Error::input(path, None, format!("cannot truncate to {max_tokens} tokens: {e}")))?;
        Ok(TextTokenizer { path: path.to_owned(), tokenizer })
    }

    /// The size of the tokenizer's vocabulary (special tokens included).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The id of token `token` (`"[MASK]"`), if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    /// The tokenizer file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole of one text as pieces of at most the limit, each with its special tokens (the tokenizer's
    /// overflowing encodings, as `return_overflowing_tokens` gives them), and which of each piece's tokens are
    /// special.
    pub fn encode_pieces(&self, text: &str) -> Result<Vec<(Tokens, Vec<bool>)>> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::input(&self.path, None, format!("tokenizing a text failed: {e}")))?;
        let piece = |e: &tokenizers::Encoding| {
            let tokens = Tokens { ids: e.get_ids().to_vec(), type_ids: e.get_type_ids().to_vec(), truncated: false };
            (tokens, e.get_special_tokens_mask().iter().map(|&m| m == 1).collect())
        };
        Ok(std::iter::once(piece(&e)).chain(e.get_overflowing().iter().map(piece)).collect())
    }

    /// The tokens of one text.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        self.encode_words(text).map(|(t, _)| t)
    }

    /// The tokens of one text and its words, in order: the pre-tokenizer's words (special tokens excluded), each
    /// with the positions of its word pieces and its text (the span of its pieces in `text`, trimmed, lowercased).
    /// A word cut off by truncation keeps the pieces that remain.
    pub fn encode_words(&self, text: &str) -> Result<(Tokens, Vec<Word>)> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::input(&self.path, None, format!("tokenizing a text failed: {e}")))?;
        let (word_ids, offsets) = (e.get_word_ids(), e.get_offsets());
        let special = e.get_special_tokens_mask();
        let mut words: Vec<Word> = Vec::new();
        let mut current: Option<(u32, usize)> = None;
        let close = |start: usize, end: usize, words: &mut Vec<Word>| {
            let (lo, hi) = (offsets[start].0, offsets[end - 1].1);
            let span = text.get(lo..hi).unwrap_or("").trim().to_lowercase();
            words.push(Word { text: span, pieces: start..end });
        };
        for (t, &word_id) in word_ids.iter().enumerate() {
            let w = if special.get(t) == Some(&1) { None } else { word_id };
            match (current, w) {
                (Some((cw, _)), Some(nw)) if cw == nw => {}
                (Some((_, start)), next) => {
                    close(start, t, &mut words);
                    current = next.map(|nw| (nw, t));
                }
                (None, next) => current = next.map(|nw| (nw, t)),
            }
        }
        if let Some((_, start)) = current {
            close(start, word_ids.len(), &mut words);
        }
        let tokens = Tokens {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            truncated: !e.get_overflowing().is_empty(),
        };
        Ok((tokens, words))
    }
}
