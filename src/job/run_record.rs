//! `run.json`: everything needed to understand and reproduce a run.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::BackendReport;
use crate::plan::config::Config;
use crate::error::{Error, Result};

/// The contents of run.json.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub started_at: String,
    pub finished_at: String,
    pub config_file: PathBuf,
    /// The config as written, with defaults filled in where the plan resolved them.
    pub config: Config,
    pub resolved: serde_json::Value,
    pub seed: u64,
    pub inputs: Vec<InputFingerprint>,
    pub versions: Versions,
    pub backend: BackendReport,
    pub stages: Vec<StageRecord>,
    /// Per stage, what it decided (e.g. the PCA solver `auto` picked and why).
    pub details: serde_json::Value,
    pub outputs: Vec<OutputRecord>,
}

/// Identifies an input file's exact contents.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct InputFingerprint {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: String,
}

/// Versions of what computed the results: the crates as Cargo.lock pinned them for this build (build.rs).
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub embjob: &'static str,
    pub polars: &'static str,
    pub wgpu: &'static str,
    pub faer: &'static str,
    pub matrixmultiply: &'static str,
    pub regex: &'static str,
    pub fancy_regex: &'static str,
    pub rustc: &'static str,
    pub target: String,
}

impl Versions {
    /// This build's versions.
    pub fn current() -> Versions {
        Versions {
            embjob: env!("CARGO_PKG_VERSION"),
            polars: env!("EMBJOB_VERSION_POLARS"),
            wgpu: env!("EMBJOB_VERSION_WGPU"),
            faer: env!("EMBJOB_VERSION_FAER"),
            matrixmultiply: env!("EMBJOB_VERSION_MATRIXMULTIPLY"),
            regex: env!("EMBJOB_VERSION_REGEX"),
            fancy_regex: env!("EMBJOB_VERSION_FANCY_REGEX"),
            rustc: env!("EMBJOB_RUSTC_VERSION"),
            target: format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS),
        }
    }
}

/// One stage's wall time and summary.
#[derive(Debug, Clone, Serialize)]
pub struct StageRecord {
    pub stage: String,
    pub seconds: f64,
    pub summary: String,
}

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRecord {
    pub file: String,
    pub rows: usize,
}

/// Size and SHA-256 of a file.
pub fn fingerprint(path: &Path) -> Result<InputFingerprint> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::input(path, None, format!("cannot open: {e}")))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::input(path, None, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(InputFingerprint { path: path.to_owned(), bytes, sha256 })
}

/// Peak resident memory of this process so far, in MB (Linux; 0 elsewhere).
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
