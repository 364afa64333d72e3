//! The contextual stage's use of the encoder cache and of duplicate texts: which rows it encodes, and every other
//! row's vector (read from the cache, or copied from the earlier row with the same text) put in its place in the
//! window, so the output is one row per input row, in input order, as a full run's.

use std::collections::HashMap;

use super::windows::Window;
use super::Context;
use crate::error::Result;
use crate::plan::ContextualPlan;
use crate::stages::vector_cache::{
    plan_rows, touch, CacheKey, CacheStore, HitReader, NewSegment, RowPlan, Source, StagedSegment,
};

/// What came from where, for the metrics and run.json.
#[derive(Debug, Default, Clone)]
pub struct ReuseTally {
    pub encoded: usize,
    pub from_cache: usize,
    pub duplicates: usize,
    /// The cache as read (segments, entries, bytes) and the segment this run adds (entries, bytes).
    pub segments: usize,
    pub entries: usize,
    pub bytes: u64,
    pub new_entries: usize,
    pub new_bytes: u64,
    pub groups_read: usize,
}

/// The cache's key folder and the segment a run adds to it (none when it encoded nothing).
pub type Published = (std::path::PathBuf, Option<NewSegment>);

pub struct Reuse {
    pub rows: RowPlan,
    store: Option<CacheStore>,
    hits: HitReader,
    staged: Option<StagedSegment>,
    /// Vectors (with token count and truncation) of rows a later row copies.
    kept: HashMap<u32, (Vec<f32>, usize, bool)>,
    tally: ReuseTally,
}

impl Reuse {
    /// The row plan of `texts`: against the cache when the plan has one (its key made of `precision` and the
    /// backend), each text once unless `every_row` (word vectors are written for every occurrence).
    pub fn open(
        ctx: &Context<'_>,
        plan: &ContextualPlan,
        precision: &serde_json::Value,
        texts: &[String],
        dim: usize,
        every_row: bool,
    ) -> Result<Reuse> {
        let store = match &plan.cache {
            Ok(c) if !every_row => {
                let key = CacheKey::of(plan, ctx.report, precision)?;
                Some(CacheStore::open(&c.dir, key, ctx.reporter)?)
            }
            _ => None,
        };
        let rows = match (&store, every_row) {
            (_, true) => RowPlan::every_row_encoded(texts.len()),
            (None, false) => plan_rows(texts, Vec::new(), "", ctx.reporter)?,
            (Some(s), false) => plan_rows(texts, s.segments(ctx.reporter)?, &s.key.id, ctx.reporter)?,
        };
        let mut tally = ReuseTally::default();
        (tally.encoded, tally.from_cache, tally.duplicates) = rows.counts();
        for (segment, used) in &rows.segments {
            tally.segments += 1;
            tally.entries += segment.rows;
            tally.bytes += segment.bytes;
            if *used {
                touch(&segment.path);
            }
        }
        let hits = HitReader::new(&rows.segments, dim);
        let staged = store.as_ref().map(|s| StagedSegment::new(ctx.out_dir, &s.key.id, dim));
        Ok(Reuse { rows, store, hits, staged, kept: HashMap::new(), tally })
    }

    /// Rows not encoded in this run (their windows leave them untokenized).
    pub fn skipped(&self) -> Vec<bool> {
        (0..self.rows.sources.len()).map(|d| !self.rows.encodes(d)).collect()
    }

    /// The window's rows that were not encoded, filled in `vectors` (window order, `dim` each); the encoded ones
    /// staged for the cache and kept where a later row copies them. Returns the window's tokens and truncated
    /// documents, counted as a run that encodes every row counts them.
    pub fn complete(&mut self, window: &Window, vectors: &mut [f32], dim: usize) -> Result<(usize, usize)> {
        let (mut tokens, mut truncated) = (0, 0);
        let mut meta: Vec<(usize, bool)> = Vec::with_capacity(window.tokens.len());
        for (i, t) in window.tokens.iter().enumerate() {
            let d = window.start + i;
            let at = i * dim..(i + 1) * dim;
            let (n, cut) = match self.rows.sources[d] {
                Source::Encode => {
                    if let Some(s) = self.staged.as_mut() {
                        s.push(&self.rows.digests[d], t.ids.len(), t.truncated, &vectors[at.clone()])?;
                    }
                    (t.ids.len(), t.truncated)
                }
                Source::Cached { segment, index, tokens, truncated } => {
                    vectors[at.clone()].copy_from_slice(self.hits.vector(segment, index)?);
                    (tokens as usize, truncated)
                }
                Source::Copy(f) => {
                    let f = f as usize;
                    if f >= window.start {
                        let j = f - window.start;
                        vectors.copy_within(j * dim..(j + 1) * dim, at.start);
                        meta[j]
                    } else {
                        let (v, n, cut) = self.kept.get(&(f as u32)).ok_or_else(|| {
                            crate::error::Error::Internal(format!("row {d} copies row {f}, which was not kept"))
                        })?;
                        vectors[at.clone()].copy_from_slice(v);
                        (*n, *cut)
                    }
                }
            };
            if self.rows.copied.contains(&(d as u32)) {
                self.kept.insert(d as u32, (vectors[at].to_vec(), n, cut));
            }
            meta.push((n, cut));
            tokens += n;
            truncated += usize::from(cut);
        }
        Ok((tokens, truncated))
    }

    /// Closes the staged segment (if anything was encoded for the cache): the cache's key folder and the new
    /// segment, and the tally.
    pub fn finish(mut self) -> Result<(Option<Published>, ReuseTally)> {
        self.tally.groups_read = self.hits.groups_read;
        let Some(store) = self.store.take() else { return Ok((None, self.tally)) };
        let new = match self.staged.take() {
            Some(s) => s.finish(&store.dir)?,
            None => None,
        };
        if let Some(n) = &new {
            self.tally.new_entries = n.rows;
            self.tally.new_bytes = n.bytes;
        }
        Ok((Some((store.dir.clone(), new)), self.tally))
    }

    /// The cache key's id and parts, when the run uses the cache.
    pub fn key(&self) -> Option<&CacheKey> {
        self.store.as_ref().map(|s| &s.key)
    }
}
