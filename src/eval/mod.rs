//! Evaluation as pure functions: ranking metrics and baselines, document neighbours, word senses.

pub mod documents;
pub mod ranking;
pub mod senses;
