//! `run.json`: everything needed to understand and reproduce a run.

use std::path::PathBuf;

use serde::Serialize;

use crate::backend::BackendReport;
use crate::data::fingerprint::InputFingerprint;
use crate::plan::config::Config;
use crate::stages::StageRecord;

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

/// One output file.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRecord {
    pub file: String,
    pub rows: usize,
}
