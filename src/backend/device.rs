//! Choosing where the math runs: finds wgpu adapters and applies `job.backend` / `--backend` / `EMBJOB_ADAPTER`.

use serde::{Deserialize, Serialize};

use super::cpu::Cpu;
pub use super::gpu::adapter::{adapters, AdapterReport};
use super::gpu::Gpu;
use super::Backend;
use crate::error::{Error, Result};

/// Where the heavy math runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// A hardware GPU when there is one, otherwise the CPU (with a one-line notice).
    #[default]
    Auto,
    Cpu,
    Gpu,
}

/// What a run uses, recorded in run.json.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// What the config or command line asked for.
    pub requested: BackendChoice,
    /// Where the math runs.
    pub used: BackendKind,
    /// The GPU adapter looked at or used, when there is one.
    pub adapter: Option<AdapterReport>,
    /// Why `auto` chose what it chose.
    pub reason: String,
}

/// The two backends (run.json: "cpu" or "gpu").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cpu,
    Gpu,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Opens the backend a run asks for. `cpu`: the CPU backend. `gpu`: the adapter named by `EMBJOB_ADAPTER`, else a
/// hardware GPU, else a software adapter (lavapipe); none is an error (exit code 4). `auto`: the named adapter or a
/// hardware GPU, never a software one (lavapipe's GEMM is ~20× slower than the CPU's); otherwise the CPU, and the
/// report says why.
pub fn open(requested: BackendChoice) -> Result<(Box<dyn Backend>, BackendReport)> {
    let wanted = std::env::var("EMBJOB_ADAPTER").ok().filter(|s| !s.is_empty());
    let cpu = |reason: String| -> (Box<dyn Backend>, BackendReport) {
        (Box::new(Cpu::new()), BackendReport { requested, used: BackendKind::Cpu, adapter: None, reason })
    };
    let gpu = |g: Gpu, reason: String| -> (Box<dyn Backend>, BackendReport) {
        let adapter = g.adapter().clone();
        (Box::new(g), BackendReport { requested, used: BackendKind::Gpu, adapter: Some(adapter), reason })
    };
    match requested {
        BackendChoice::Cpu => Ok(cpu("requested".into())),
        BackendChoice::Gpu => match Gpu::open(wanted.as_deref(), true)? {
            Some(g) => {
                let reason = format!("requested; adapter '{}' ({})", g.adapter().name, g.adapter().device_type);
                Ok(gpu(g, reason))
            }
            None => Err(Error::Gpu(match &wanted {
                Some(n) => format!("backend = \"gpu\" but no adapter matches EMBJOB_ADAPTER='{n}'"),
                None => "backend = \"gpu\" but no GPU adapter was found (for a software one: apt-get install mesa-vulkan-drivers)".into(),
            })),
        },
        BackendChoice::Auto => match Gpu::open(wanted.as_deref(), false)? {
            Some(g) => {
                let reason = format!("auto: adapter '{}' ({})", g.adapter().name, g.adapter().device_type);
                Ok(gpu(g, reason))
            }
            None => {
                let all = adapters();
                Ok(cpu(match &wanted {
                    Some(n) => format!("no GPU adapter matches EMBJOB_ADAPTER='{n}': using the CPU"),
                    None if all.is_empty() => "no GPU adapter found: using the CPU".into(),
                    None => format!(
                        "no hardware GPU adapter found (only software: {}): using the CPU",
                        all.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                }))
            }
        },
    }
}
