//! Input fingerprints: what run.json and shard manifests record of each input file, to tell its exact contents.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Identifies an input file's exact contents.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InputFingerprint {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// Size and SHA-256 of a file.
pub fn fingerprint(path: &Path) -> Result<InputFingerprint> {
    let (sha, bytes) = file_sha256(path).map_err(|e| Error::input(path, None, format!("cannot read: {e}")))?;
    let sha256 = sha.iter().map(|b| format!("{b:02x}")).collect();
    Ok(InputFingerprint { path: path.to_owned(), bytes, sha256 })
}

/// The SHA-256 of a file's bytes, and their count, read in blocks of 1 MiB.
pub fn file_sha256(path: &Path) -> std::io::Result<([u8; 32], u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((hasher.finalize().into(), bytes))
}
