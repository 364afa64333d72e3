//! Sharded runs: `embjob run job.toml --shard i/N` computes one share of a text job's input as a task of an engine
//! that schedules and retries (Ray, Spark, Kubernetes Indexed Jobs, Slurm arrays); `embjob merge job.toml` checks
//! that all N shards are there and belong to this config and input, then runs the whole-data stages on them and
//! commits a normal run. The result equals the single run's, bit for bit (tests/embjob/shards.rs).
//!
//! - A shard is a contiguous set of whole input files, balanced by rows ([`assign`]); every shard lists the same
//!   files in the same order as the single run reads them, so the merge puts documents back in input order.
//! - A shard writes its documents' token counts over its own sorted token list (the vocabulary's raw material:
//!   document frequencies and totals follow from them) and, with `[contextual]`, its documents' text vectors. The
//!   merge sums the counts into one vocabulary, prunes it and fixes the ids ([`crate::text::vectorizer::DocCounts::concat`]),
//!   weights the rows and fits PCA exactly as the single run does; the text vectors stay a partitioned dataset.
//!
//! ```text
//! <output.dir>/shards/shard-00003-of-00064/{manifest.json, rows.parquet, tokens.parquet, counts.parquet,
//!                                            text_embeddings.parquet}
//! <output.dir>/shards/.staging-shard-00003-of-00064-<pid>/   (only while the task runs)
//! ```

mod merge;
mod task;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::fingerprint::InputFingerprint;
use crate::error::{ConfigProblem, Error, Result};
use crate::plan::config::Layout;
use crate::plan::Plan;

pub use merge::ShardSet;
pub use task::{run_shard, ShardSummary};

/// Shard `index` of `count`, as `--shard index/count` names it (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: usize,
    pub count: usize,
}

impl ShardSpec {
    /// Parses `i/N` with 0 ≤ i < N.
    pub fn parse(text: &str) -> std::result::Result<ShardSpec, String> {
        let bad = || format!("--shard {text}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 3/64");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) =
            (i.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        if count == 0 || index >= count || count > 99_999 {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }

    /// The shard's folder name under `shards/`: `shard-00003-of-00064`.
    pub fn dir_name(self) -> String {
        format!("shard-{:05}-of-{:05}", self.index, self.count)
    }

    /// The spec a folder name stands for.
    pub fn from_dir_name(name: &str) -> Option<ShardSpec> {
        let rest = name.strip_prefix("shard-")?;
        let (i, n) = rest.split_once("-of-")?;
        let spec = ShardSpec { index: i.parse().ok()?, count: n.parse().ok()? };
        (spec.index < spec.count && spec.dir_name() == name).then_some(spec)
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `<output.dir>/shards`.
pub fn shards_dir(plan: &Plan) -> PathBuf {
    plan.output_dir.join("shards")
}

/// The shard each file belongs to: contiguous runs of files in input order, balanced by weight (rows): a file goes
/// to the shard its weight's midpoint falls in. Shards may be empty (more shards than files).
pub fn assign(weights: &[u64], count: usize) -> Vec<usize> {
    let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
    let n = count.max(1) as u128;
    let mut before: u128 = 0;
    weights
        .iter()
        .enumerate()
        .map(|(j, &w)| {
            let shard = if total == 0 {
                j as u128 * n / weights.len().max(1) as u128
            } else {
                (2 * before + u128::from(w)) * n / (2 * total)
            };
            before += u128::from(w);
            shard.min(n - 1) as usize
        })
        .collect()
}

/// One input file as every shard and the merge list it: what decides the split and detects a changed input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedFile {
    /// The path below the input's root (the whole path for a plain file).
    pub path: PathBuf,
    pub bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub modified_ns: u128,
    /// Rows from the Parquet footer; `None` for CSV (weighted by bytes, counted only where a shard needs it).
    pub rows: Option<u64>,
}

impl ListedFile {
    /// The weight that balances shards: rows where known, else bytes.
    pub fn weight(&self) -> u64 {
        self.rows.unwrap_or(self.bytes)
    }
}

/// The plan's input files, listed (Parquet footers read, nothing else).
pub fn list_input(plan: &Plan) -> Result<Vec<ListedFile>> {
    let input = &plan.input;
    input
        .files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).map_err(|e| Error::input(f, None, format!("cannot stat: {e}")))?;
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let rows = match input.format {
                crate::plan::config::Format::Parquet => Some(crate::data::row_count(f)? as u64),
                crate::plan::config::Format::Csv => None,
            };
            let path = f.strip_prefix(&input.root).map_or_else(|_| f.clone(), Path::to_path_buf);
            Ok(ListedFile { path, bytes: meta.len(), modified_ns, rows })
        })
        .collect()
}

/// What a shard records of itself, and what the merge checks before it uses the shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The embjob version that wrote the shard (the merge needs the same tokenizer and encoder).
    pub embjob: String,
    pub job: String,
    pub shard: usize,
    pub shards: usize,
    /// SHA-256 of the config sections a shard's results depend on ([`config_digest`]).
    pub config_digest: String,
    /// Every input file, in input order.
    pub listing: Vec<ListedFile>,
    /// This shard's files with their SHA-256, in input order.
    pub files: Vec<InputFingerprint>,
    /// The global index of the shard's first row, and its row count.
    pub first_row: usize,
    pub rows: usize,
    /// Distinct tokens among the shard's documents, and their (document, token) pairs.
    pub tokens: usize,
    pub pairs: usize,
    /// Stop-word occurrences dropped from the shard's documents.
    pub stop_words_dropped: u64,
    /// The contextual stage's counts for the shard's documents (name, value), when it ran.
    pub contextual: Vec<(String, f64)>,
    /// Seconds the contextual stage took.
    pub encode_seconds: f64,
    /// The encoder cache's key folder the shard read, when the vectors it encoded are in its
    /// [`CACHE_SEGMENT`] for the merge to publish.
    #[serde(default)]
    pub cache_store: Option<PathBuf>,
    /// Seconds the task took, from the start to the manifest.
    pub seconds: f64,
    /// The shard's files and their sizes in bytes (for the cost table).
    pub written: Vec<(String, u64)>,
}

/// A shard's newly encoded vectors, for the encoder cache.
pub const CACHE_SEGMENT: &str = "cache_segment.parquet";

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";

/// SHA-256 of the `[input]`, `[bow]` and `[contextual]` sections: a shard computed under other values for these has
/// other results. The later sections (`[pca]`, `[eval]`, `[output]`) apply in the merge and may change freely.
pub fn config_digest(plan: &Plan) -> Result<String> {
    let c = &plan.config;
    let json = serde_json::to_vec(&(&c.input, &c.bow, &c.contextual)).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(Sha256::digest(&json).iter().map(|b| format!("{b:02x}")).collect())
}

/// A sharded run splits a text job (BoW, PCA, contextual vectors, document evaluation); other jobs are refused with
/// the keys that stand in the way.
pub fn check_shardable(plan: &Plan) -> Result<()> {
    let mut problems = Vec::new();
    let mut add = |key: &str, message: &str| {
        problems.push(ConfigProblem { key: key.to_owned(), message: message.to_owned() });
    };
    if plan.config.input.layout != Layout::Text {
        add(
            "input.layout",
            "sharded runs (--shard, merge) split text jobs; a long, list or numeric job reads all its rows on one \
             node (the model trains on every user's items)",
        );
    }
    if let Some(c) = &plan.contextual {
        if c.words.is_some() || c.senses.is_some() {
            add(
                "contextual.words",
                "word vectors and word senses are not split into shards; run this job without --shard",
            );
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::ConfigInvalid { file: plan.config_file.clone(), problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_name_folders() {
        assert_eq!(ShardSpec::parse("3/64"), Ok(ShardSpec { index: 3, count: 64 }));
        for bad in ["64/64", "1", "a/2", "0/0", "-1/3"] {
            assert!(ShardSpec::parse(bad).is_err(), "{bad}");
        }
        let s = ShardSpec { index: 3, count: 64 };
        assert_eq!(s.dir_name(), "shard-00003-of-00064");
        assert_eq!(ShardSpec::from_dir_name(&s.dir_name()), Some(s));
        assert_eq!(ShardSpec::from_dir_name("shard-3-of-64"), None);
        assert_eq!(ShardSpec::from_dir_name("shard-00064-of-00064"), None);
    }

    #[test]
    fn files_go_to_contiguous_shards_balanced_by_weight() {
        assert_eq!(assign(&[10, 10, 10, 10], 2), vec![0, 0, 1, 1]);
        assert_eq!(assign(&[100, 1, 1, 1], 2), vec![0, 1, 1, 1]);
        // More shards than files: some stay empty; every file has one shard.
        assert_eq!(assign(&[5, 5], 7), vec![1, 5]);
        assert_eq!(assign(&[0, 0, 0], 2), vec![0, 0, 1]);
        let a = assign(&[3, 9, 1, 4, 4, 8, 2], 3);
        assert!(a.windows(2).all(|w| w[0] <= w[1]) && a.iter().all(|&s| s < 3), "{a:?}");
        assert_eq!(assign(&[7, 7, 7], 1), vec![0, 0, 0]);
    }
}
