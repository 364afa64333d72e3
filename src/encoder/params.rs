//! What an encoding run is asked for, as the plan resolves it against the model folder: [`EncodeParams`] for the
//! document vectors, [`WordsParams`] for the word vectors written beside them.

use crate::backend::PoolMode;

/// How documents become vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodeParams {
    pub pooling: PoolMode,
    /// Scale every vector to unit length.
    pub normalize: bool,
    /// Tokens per document, at most (the model's and the backend's limit).
    pub max_tokens: usize,
    /// Cut longer documents instead of refusing them.
    pub truncate: bool,
    /// Padded tokens per batch (at least `max_tokens`).
    pub batch_tokens: usize,
}

/// Which word occurrences get vectors of their own, at which hidden states.
#[derive(Debug, Clone, PartialEq)]
pub struct WordsParams {
    /// Lowercased words to match; `None`: every word, up to `limit` occurrences.
    pub only: Option<Vec<String>>,
    pub limit: usize,
    /// Hidden states, ascending (0: the embeddings' output, l: after layer l).
    pub layers: Vec<usize>,
    /// Also the word-piece embedding rows alone (the static control).
    pub static_control: bool,
}
