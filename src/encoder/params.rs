//! What an encoding run is asked for, as the plan resolves it against the model folder: [`EncodeParams`] for the
//! document vectors, [`WordsParams`] for the word vectors written beside them.

use crate::backend::PoolMode;

/// `contextual.precision`: what the encoder's dense layers multiply in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionChoice {
    /// f16 where the adapter has tensor cores (cooperative matrices), f32 elsewhere.
    #[default]
    Auto,
    F32,
    /// The dense layers' weights stored in f16 and their inputs rounded to f16, every sum in f32 (on tensor cores
    /// where the adapter has them); LayerNorm, softmax, GELU and the attention stay in f32. Needs a GPU with f16.
    F16,
}

/// What the encoder's dense layers multiply in, as a run resolved `contextual.precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F16,
}

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
    /// As configured; resolved against the backend when the encoder is made ([`super::resolve_precision`]).
    pub precision: PrecisionChoice,
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
