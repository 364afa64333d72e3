//! Where each document's vector comes from in a run: encoded, read from a cached segment, or copied from an earlier
//! row with the same text (duplicates are encoded once, cache or not). Built before any encoding from the SHA-256 of
//! every text and one scan of the segments' digest columns.
//!
//! Memory: 32 bytes per input row for its digest, 16 for its source, about 56 per distinct text for the map of first
//! occurrences; nothing per cached document beyond the slice being scanned (65,536 rows). Vectors stay on disk until
//! the window that needs them.

use std::collections::HashMap;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::store::Segment;
use crate::data::cache_segments::scan_segment;
use crate::error::Result;
use crate::runtime::progress::Reporter;

/// Where one row's vector comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Encoded in this run (the first row with its text, not in the cache).
    Encode,
    /// Row `index` of segment `segment`, with the token count and truncation it was encoded with.
    Cached { segment: u32, index: u32, tokens: u32, truncated: bool },
    /// The same text as this earlier row.
    Copy(u32),
}

/// Every row's digest and source, and which rows a later duplicate copies.
pub struct RowPlan {
    pub digests: Vec<[u8; 32]>,
    pub sources: Vec<Source>,
    /// Rows whose vector a later row copies.
    pub copied: std::collections::HashSet<u32>,
    /// The segments read, indexed by `Source::Cached::segment`; `true` where a row uses it.
    pub segments: Vec<(Segment, bool)>,
}

impl RowPlan {
    /// Rows by source: (encoded, from the cache, duplicates).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for s in &self.sources {
            match s {
                Source::Encode => c.0 += 1,
                Source::Cached { .. } => c.1 += 1,
                Source::Copy(_) => c.2 += 1,
            }
        }
        c
    }

    /// True when row `d` is encoded in this run.
    pub fn encodes(&self, d: usize) -> bool {
        self.sources[d] == Source::Encode
    }
}

impl RowPlan {
    /// Every one of `n` rows encoded (no digests): when word vectors are written for every occurrence.
    pub fn every_row_encoded(n: usize) -> RowPlan {
        RowPlan {
            digests: Vec::new(),
            sources: vec![Source::Encode; n],
            copied: Default::default(),
            segments: Vec::new(),
        }
    }
}

/// The SHA-256 of a text's UTF-8 bytes.
pub fn text_digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// The plan of `texts` against `segments` (none without a cache): segments whose rows carry another key than `key`
/// or cannot be read are skipped with a notice naming them, and contribute nothing.
pub fn plan_rows(texts: &[String], segments: Vec<Segment>, key: &str, reporter: &dyn Reporter) -> Result<RowPlan> {
    let digests: Vec<[u8; 32]> = texts.par_iter().map(|t| text_digest(t)).collect();
    let mut first: HashMap<[u8; 32], u32> = HashMap::with_capacity(digests.len());
    let mut sources = Vec::with_capacity(digests.len());
    let mut copied = std::collections::HashSet::new();
    for (d, digest) in digests.iter().enumerate() {
        match first.entry(*digest) {
            std::collections::hash_map::Entry::Occupied(e) => {
                copied.insert(*e.get());
                sources.push(Source::Copy(*e.get()));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(d as u32);
                sources.push(Source::Encode);
            }
        }
    }
    let mut read = Vec::with_capacity(segments.len());
    for mut segment in segments {
        let s = read.len() as u32;
        match hits_in(&segment, s, &first, &sources, key) {
            Ok((hits, rows)) => {
                segment.rows = rows;
                let used = !hits.is_empty();
                for (row, source) in hits {
                    sources[row as usize] = source;
                }
                read.push((segment, used));
            }
            Err(why) => reporter
                .notice(&format!("cache: skipped {} ({why}); its documents are encoded again", segment.path.display())),
        }
    }
    Ok(RowPlan { digests, sources, copied, segments: read })
}

/// The rows still to encode that segment `s` holds, as their cached sources; an error when the segment holds a row
/// of another key or does not read as a segment.
fn hits_in(
    segment: &Segment,
    s: u32,
    first: &HashMap<[u8; 32], u32>,
    sources: &[Source],
    key: &str,
) -> std::result::Result<(Vec<(u32, Source)>, usize), String> {
    let mut hits = Vec::new();
    let mut problem: Option<String> = None;
    let rows = scan_segment(&segment.path, |r| {
        if problem.is_some() {
            return;
        }
        if r.key != key {
            problem = Some(format!("row {} was written under another cache key", r.index));
            return;
        }
        let Some(digest) = super::key::unhex32(r.digest) else {
            problem = Some(format!("row {}: text_sha256 is not a SHA-256", r.index));
            return;
        };
        if let Some(&row) = first.get(&digest) {
            if sources[row as usize] == Source::Encode {
                let index = r.index as u32;
                hits.push((row, Source::Cached { segment: s, index, tokens: r.tokens, truncated: r.truncated }));
            }
        }
    })
    .map_err(|e| format!("{e:#}"))?;
    match problem {
        Some(p) => Err(p),
        None => {
            // A digest found twice in one segment is used once: the last hit of a row wins, all are equal.
            Ok((hits, rows))
        }
    }
}
