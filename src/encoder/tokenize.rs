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

    /// The tokens of one text.
    pub fn encode(&self, text: &str) -> Result<Tokens> {
        let e = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::input(&self.path, None, format!("tokenizing a text failed: {e}")))?;
        Ok(Tokens {
            ids: e.get_ids().to_vec(),
            type_ids: e.get_type_ids().to_vec(),
            truncated: !e.get_overflowing().is_empty(),
        })
    }
}
