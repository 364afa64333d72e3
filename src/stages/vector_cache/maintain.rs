//! Keeping a key's folder in bounds after a run published into it, under the exclusive lock (skipped, with a
//! notice, while another run reads the cache):
//!
//! * **expiry**: a segment no run has read from for `cache_keep_days` days (its modification time, renewed by
//!   every run that uses it) is removed, and so is an incoming file older than a day (a run killed between its two
//!   steps of publishing); in the run's own key folder and in the other key folders beside it (the vectors of a
//!   model or setting no longer used), each under its own lock;
//! * **compaction**: when more than [`MAX_SEGMENTS`] segments remain, all of them are merged into one (each text
//!   once), streamed a row group at a time, then the old ones are removed. The merged segment is written under an
//!   incoming name and renamed, so a reader sees either the old segments or the new one; a crash in between leaves
//!   both, which hold the same vectors.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::key::unhex32;
use super::store::{age, file_sha256, list, lock_file, segment_checksum, segment_name, INCOMING_PREFIX};
use crate::data::cache_segments::{read_segment_rows, SegmentWriter, SEGMENT_ROW_GROUP};
use crate::error::{Error, Result};
use crate::runtime::progress::Reporter;

/// More segments than this in a key's folder are compacted into one.
pub const MAX_SEGMENTS: usize = 16;

/// Expiry, then compaction when the folder has more than [`MAX_SEGMENTS`] segments; problems are notices.
pub fn maintain(dir: &Path, keep_days: u64, reporter: &dyn Reporter) {
    let lock = match lock_file(dir) {
        Ok(l) => l,
        Err(e) => return reporter.notice(&format!("cache: no compaction or expiry: {e:#}")),
    };
    if lock.try_lock().is_err() {
        reporter
            .notice(&format!("cache: compaction and expiry of {} skipped: another run is reading it", dir.display()));
        return;
    }
    if let Err(e) = expire(dir, keep_days).and_then(|_| compact_if_needed(dir)) {
        reporter.notice(&format!("cache: {e:#}"));
    }
    drop(lock);
    expire_other_keys(dir, keep_days, reporter);
}

/// Expiry in the other key folders beside `dir` (a model or setting no run uses any more would otherwise keep its
/// segments for ever), each under its own exclusive lock; a folder some run is reading is left for a later run.
fn expire_other_keys(dir: &Path, keep_days: u64, reporter: &dyn Reporter) {
    let Some(root) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for other in entries.flatten().map(|e| e.path()) {
        if other == dir || !other.join("key.json").is_file() {
            continue;
        }
        let Ok(lock) = lock_file(&other) else { continue };
        if lock.try_lock().is_ok() {
            if let Err(e) = expire(&other, keep_days) {
                reporter.notice(&format!("cache: {e:#}"));
            }
        }
    }
}

/// Removes segments unused for `keep_days` days and incoming files older than a day.
fn expire(dir: &Path, keep_days: u64) -> Result<()> {
    let keep = Duration::from_secs(keep_days.saturating_mul(86_400));
    for path in list(dir)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let old = if segment_checksum(&name).is_some() {
            age(&path) > keep
        } else {
            name.starts_with(INCOMING_PREFIX) && age(&path) > Duration::from_secs(86_400)
        };
        if old {
            std::fs::remove_file(&path).map_err(|e| Error::output(&path, "cannot remove an expired cache file", e))?;
        }
    }
    Ok(())
}

/// The folder's segments (by name; checksums are checked as they are read).
fn segment_files(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    Ok(list(dir)?
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).and_then(segment_checksum).is_some())
        .collect())
}

/// Merges every segment into one when there are more than [`MAX_SEGMENTS`].
fn compact_if_needed(dir: &Path) -> Result<()> {
    let segments = segment_files(dir)?;
    if segments.len() <= MAX_SEGMENTS {
        return Ok(());
    }
    let key = key_of(dir)?;
    let tmp = dir.join(format!("{INCOMING_PREFIX}compact-{}.parquet", std::process::id()));
    let mut writer: Option<SegmentWriter> = None;
    let mut seen: HashSet<[u8; 32]> = HashSet::new();
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut merged = Vec::new();
    for path in &segments {
        // Only segments whose bytes match their names are merged; others stay (and are skipped by readers).
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let ok = file_sha256(path).ok().is_some_and(|(sha, _)| Some(sha) == segment_checksum(name));
        if !ok {
            continue;
        }
        copy_rows(path, &tmp, &key, &mut writer, &mut seen)?;
        if let Ok(m) = std::fs::metadata(path).and_then(|m| m.modified()) {
            newest = newest.max(m);
        }
        merged.push(path.clone());
    }
    let Some(w) = writer else { return Ok(()) };
    w.finish()?;
    let (sha, _) = file_sha256(&tmp).map_err(|e| Error::output(&tmp, "cannot read", e))?;
    let target = dir.join(segment_name(&sha));
    if let Ok(f) = std::fs::File::options().write(true).open(&tmp) {
        let _ = f.set_modified(newest);
    }
    std::fs::rename(&tmp, &target).map_err(|e| Error::output(&target, "cannot write the compacted segment", e))?;
    for path in merged.into_iter().filter(|p| *p != target) {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Every row of `path` not seen yet into the compacted segment.
fn copy_rows(
    path: &Path,
    tmp: &Path,
    key: &str,
    writer: &mut Option<SegmentWriter>,
    seen: &mut HashSet<[u8; 32]>,
) -> Result<()> {
    let mut offset = 0;
    loop {
        let rows = read_segment_rows(path, offset, SEGMENT_ROW_GROUP)?;
        if rows.digests.is_empty() {
            return Ok(());
        }
        if writer.is_none() {
            *writer = Some(SegmentWriter::create(tmp, key, rows.dim)?);
        }
        let w = writer.as_mut().ok_or_else(|| Error::Internal("compaction writer".into()))?;
        for (i, digest) in rows.digests.iter().enumerate() {
            let Some(d) = unhex32(digest) else { continue };
            if seen.insert(d) {
                w.push(
                    digest.clone(),
                    rows.tokens[i] as usize,
                    rows.truncated[i],
                    &rows.vectors[i * rows.dim..(i + 1) * rows.dim],
                )?;
            }
        }
        offset += rows.digests.len();
    }
}

/// The key id of a folder, from its key.json.
fn key_of(dir: &Path) -> Result<String> {
    let path = dir.join("key.json");
    let text = std::fs::read(&path).map_err(|e| Error::input(&path, None, format!("cannot read: {e}")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::input(&path, None, format!("not JSON: {e}")))?;
    v.get("key").and_then(|k| k.as_str()).map(str::to_owned).ok_or_else(|| Error::input(&path, Some("key"), "missing"))
}
