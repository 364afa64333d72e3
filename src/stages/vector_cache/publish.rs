//! A run's new vectors into the cache, in three steps around the run's commit:
//!
//! 1. during the contextual stage, [`StagedSegment`] writes them into the run's staging folder;
//! 2. before the commit, [`NewSegment::bring_in`] moves (or copies, across file systems) that file into the key's
//!    folder as `.incoming-<sha256>.parquet`, which no reader takes: a full disk fails the run here, with the cache
//!    unchanged;
//! 3. after the commit, [`Incoming::publish`] renames it to `seg-<sha256>.parquet` (visible from then on); then
//!    the run keeps the folder in bounds ([`super::maintain`]).

use std::path::{Path, PathBuf};

use super::key::hex;
use super::store::{file_sha256, segment_name, INCOMING_PREFIX};
use crate::data::cache_segments::SegmentWriter;
use crate::error::{Error, Result};
use crate::runtime::progress::Reporter;

/// The staging folder's file of new vectors.
pub const STAGED_FILE: &str = ".cache-segment.parquet";

/// The new vectors of a run, written as they are encoded (the file is created with the first).
pub struct StagedSegment {
    path: PathBuf,
    key: String,
    dim: usize,
    writer: Option<SegmentWriter>,
}

impl StagedSegment {
    pub fn new(staging: &Path, key: &str, dim: usize) -> StagedSegment {
        StagedSegment { path: staging.join(STAGED_FILE), key: key.to_owned(), dim, writer: None }
    }

    pub fn push(&mut self, digest: &[u8; 32], tokens: usize, truncated: bool, vector: &[f32]) -> Result<()> {
        if self.writer.is_none() {
            self.writer = Some(SegmentWriter::create(&self.path, &self.key, self.dim)?);
        }
        match self.writer.as_mut() {
            Some(w) => w.push(hex(digest), tokens, truncated, vector),
            None => Err(Error::Internal("cache segment writer".into())),
        }
    }

    /// The finished file, or `None` when nothing was encoded.
    pub fn finish(self, store_dir: &Path) -> Result<Option<NewSegment>> {
        let Some(w) = self.writer else { return Ok(None) };
        let rows = w.finish()?;
        let bytes = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        Ok(Some(NewSegment { path: self.path, store_dir: store_dir.to_owned(), rows, bytes }))
    }
}

/// A finished file of new vectors, in a staging folder (a run's, or a shard's), for the key folder `store_dir`.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub path: PathBuf,
    pub store_dir: PathBuf,
    pub rows: usize,
    pub bytes: u64,
}

/// A segment in its key folder under its incoming name, waiting for the run's commit.
#[derive(Debug)]
pub struct Incoming {
    path: PathBuf,
    sha: [u8; 32],
    store_dir: PathBuf,
}

impl NewSegment {
    /// Step 2: the file into the key folder as `.incoming-<sha256>.parquet`, flushed. On any error (a full disk)
    /// the partial copy is removed and the run fails: nothing of it is in the cache.
    pub fn bring_in(&self) -> Result<Incoming> {
        let (sha, _) =
            file_sha256(&self.path).map_err(|e| Error::input(&self.path, None, format!("cannot read: {e}")))?;
        let path = self.store_dir.join(format!("{INCOMING_PREFIX}{}.parquet", hex(&sha)));
        let moved = std::fs::rename(&self.path, &path).is_ok();
        if !moved {
            let copied =
                std::fs::copy(&self.path, &path).and_then(|_| std::fs::File::open(&path)).and_then(|f| f.sync_all());
            if let Err(e) = copied {
                let _ = std::fs::remove_file(&path);
                return Err(Error::output(&path, "cannot write the cache segment", e));
            }
            let _ = std::fs::remove_file(&self.path);
        }
        Ok(Incoming { path, sha, store_dir: self.store_dir.clone() })
    }
}

impl Incoming {
    /// Step 3, after the run's commit: the segment becomes visible. Nothing here fails the run (it is committed): a
    /// problem is a notice, and the file is removed.
    pub fn publish(mut self, reporter: &dyn Reporter) {
        let target = self.store_dir.join(segment_name(&self.sha));
        let renamed = std::fs::rename(&self.path, &target);
        self.path = PathBuf::new();
        if let Err(e) = renamed {
            reporter.notice(&format!("cache: could not publish {}: {e}", target.display()));
            return;
        }
        if let Ok(d) = std::fs::File::open(&self.store_dir) {
            let _ = d.sync_all();
        }
    }
}

impl Drop for Incoming {
    /// A run that fails after step 2 takes its incoming file back out of the cache.
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
