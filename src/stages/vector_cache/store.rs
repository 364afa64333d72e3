//! One key's folder of the cache: `key.json` (the key's parts, for a person), `.lock`, and the segments
//! `seg-<sha256 of the file>.parquet`. A segment is trusted only after its bytes hash to its name; anything else in
//! the folder is skipped with a notice (or, for a run's `.incoming-*` file, silently: it is not visible yet).
//!
//! Locking: a run holds a shared lock on `.lock` while it reads segments; compaction and expiry take it exclusively
//! and only when no run holds it (they are skipped otherwise). Publishing a segment is one rename of a file named by
//! its content, so two runs cannot collide: the same name means the same bytes.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::key::{hex, unhex32, CacheKey};
pub use crate::data::fingerprint::file_sha256;
use crate::error::{Error, Result};
use crate::runtime::progress::Reporter;

/// A run's file being published: `.incoming-<sha256>.parquet`.
pub const INCOMING_PREFIX: &str = ".incoming-";

/// The lock file of a key's folder.
const LOCK_FILE: &str = ".lock";

/// A key's folder, open and locked (shared) for reading.
pub struct CacheStore {
    pub dir: PathBuf,
    pub key: CacheKey,
    _lock: File,
}

/// A segment whose bytes matched its name.
#[derive(Debug, Clone)]
pub struct Segment {
    pub path: PathBuf,
    pub bytes: u64,
    /// Rows, once scanned.
    pub rows: usize,
}

impl CacheStore {
    /// Creates the key's folder under `root` if needed, writes its key.json, takes the shared lock (saying so when
    /// it has to wait for another run's compaction).
    pub fn open(root: &Path, key: CacheKey, reporter: &dyn Reporter) -> Result<CacheStore> {
        let dir = root.join(key.folder_name());
        std::fs::create_dir_all(&dir).map_err(|e| Error::output(&dir, "cannot create the cache folder", e))?;
        let key_json = dir.join("key.json");
        if !key_json.is_file() {
            let text = serde_json::to_vec_pretty(&serde_json::json!({ "key": key.id, "parts": key.parts }))
                .map_err(|e| Error::Internal(e.to_string()))?;
            write_atomically(&key_json, &text)?;
        }
        let lock = lock_file(&dir)?;
        if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock_shared() {
            reporter.notice(&format!("cache: waiting for another run's compaction of {}", dir.display()));
            lock.lock_shared().map_err(|e| Error::output(dir.join(LOCK_FILE), "cannot lock", e))?;
        }
        Ok(CacheStore { dir, key, _lock: lock })
    }

    /// The folder's segments whose bytes hash to their names; every other file is named in a notice and skipped.
    pub fn segments(&self, reporter: &dyn Reporter) -> Result<Vec<Segment>> {
        let (mut good, mut skipped) = (Vec::new(), Vec::new());
        for path in list(&self.dir)? {
            match check_segment(&path) {
                Ok(Some(s)) => good.push(s),
                Ok(None) => {}
                Err(why) => skipped.push(format!("{} ({why})", path.display())),
            }
        }
        for s in skipped {
            reporter.notice(&format!("cache: skipped {s}; its documents are encoded again"));
        }
        Ok(good)
    }
}

/// The lock file of a key's folder, opened (created) for locking.
pub fn lock_file(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::output(&path, "cannot open the cache lock", e))
}

/// The entries of a key's folder, in name order.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::input(dir, None, format!("cannot list the cache: {e}")))?;
    let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    paths.sort();
    Ok(paths)
}

/// `Ok(Some)`: a segment whose bytes match its name; `Ok(None)`: the folder's own files and runs' incoming files;
/// `Err(why)`: anything else.
fn check_segment(path: &Path) -> std::result::Result<Option<Segment>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if name == LOCK_FILE || name == "key.json" || name.starts_with(INCOMING_PREFIX) {
        return Ok(None);
    }
    let Some(expected) = segment_checksum(&name) else {
        return Err("not a cache segment".into());
    };
    if !path.is_file() {
        return Err("not a file".into());
    }
    let (sha, bytes) = file_sha256(path).map_err(|e| format!("cannot read: {e}"))?;
    if sha != expected {
        return Err("its bytes do not match its checksum".into());
    }
    Ok(Some(Segment { path: path.to_owned(), bytes, rows: 0 }))
}

/// The checksum a segment's file name carries (`seg-<64 hex>.parquet`).
pub fn segment_checksum(name: &str) -> Option<[u8; 32]> {
    unhex32(name.strip_prefix("seg-")?.strip_suffix(".parquet")?)
}

/// The name of a segment whose bytes hash to `sha`.
pub fn segment_name(sha: &[u8; 32]) -> String {
    format!("seg-{}.parquet", hex(sha))
}

/// Marks a segment as used now (its modification time), which keeps it from expiring.
pub fn touch(path: &Path) {
    if let Ok(f) = File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// How long ago a file was last modified (zero when unknown).
pub fn age(path: &Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .unwrap_or_default()
}

/// Writes a small file through a temporary name and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!("{INCOMING_PREFIX}{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::output(&tmp, "cannot write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::output(path, "cannot write", e)
    })
}
