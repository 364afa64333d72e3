//! What `embjob merge` reads instead of the input: the results of a sharded run's tasks. The ingest, bow and
//! contextual stages take them through [`MergedInput`]; the job's shard set implements it (`job::shard::ShardSet`),
//! so the stages know nothing of shard folders or manifests.

use std::path::PathBuf;

use crate::data::dataset::Dataset;
use crate::data::fingerprint::InputFingerprint;
use crate::error::Result;
use crate::runtime::metrics::Metrics;
use crate::text::vectorizer::DocCounts;

/// One part's text vectors: a Parquet file holding `rows` documents' vectors, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPart {
    /// The part's index (its shard), which names its file in the run.
    pub index: usize,
    pub path: PathBuf,
    pub rows: usize,
}

/// Results computed elsewhere, in parts, that replace reading, counting and encoding the input.
pub trait MergedInput: Sync {
    /// How many parts.
    fn parts(&self) -> usize;
    /// Every input file's fingerprint, in input order.
    fn fingerprints(&self) -> Vec<InputFingerprint>;
    /// The documents' ids in input order (their texts stay with the parts: empty strings here).
    fn corpus(&self) -> Result<Dataset>;
    /// All documents' token counts, in input order, over the union of the parts' tokens.
    fn doc_counts(&self) -> Result<DocCounts>;
    /// The parts' text vector files, in order (parts without documents have none).
    fn text_parts(&self) -> Vec<TextPart>;
    /// The contextual stage's metrics over all parts.
    fn contextual_metrics(&self, metrics: &mut Metrics);
    /// The vectors the parts encoded for the encoder cache, with the cache folder each read.
    fn cache_segments(&self) -> Vec<crate::stages::vector_cache::NewSegment>;
}
