//! Evaluation as pure functions: ranking metrics and baselines, document neighbours, word senses.

pub mod doc_eval;
pub mod ranking;
pub mod senses;
