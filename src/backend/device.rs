//! Choosing where the math runs: finds wgpu adapters and applies `job.backend` / `--backend` / `EMBJOB_ADAPTER`.

use serde::{Deserialize, Serialize};

use super::cpu::Cpu;
use super::gpu::Gpu;
use super::Backend;
use crate::error::{Error, Result};

/// A wgpu instance, created only after the Vulkan loader's environment is set for a quiet run: every instance of
/// embjob comes from here.
pub(crate) fn instance() -> wgpu::Instance {
    quiet_loader();
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Mesa's device-select layer prints `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` for every
/// instance on a headless machine (a server, a container, a scheduler's job): lines that are not embjob's and
/// look like failures. embjob chooses its adapter itself (`EMBJOB_ADAPTER`, hardware first), so the layer has
/// nothing to do for it: it is turned off (`NODEVICE_SELECT=1`) before the first instance, unless the user set
/// `NODEVICE_SELECT` or asked the layer for a device (`MESA_VK_DEVICE_SELECT`).
fn quiet_loader() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let user_chose = ["NODEVICE_SELECT", "MESA_VK_DEVICE_SELECT"].iter().any(|v| std::env::var_os(v).is_some());
        if !user_chose {
            // Set once, before any instance exists: every instance is created after this call returns (the
            // `Once` blocks other threads until it has), so no loader code of ours reads the environment while it
            // changes; std's own readers take the environment lock.
            std::env::set_var("NODEVICE_SELECT", "1");
        }
    });
}

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

/// A wgpu adapter, as run.json records it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AdapterReport {
    pub name: String,
    pub device_type: String,
    pub backend: String,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterReport {
    pub fn from_info(info: &wgpu::AdapterInfo) -> AdapterReport {
        AdapterReport {
            name: info.name.clone(),
            device_type: format!("{:?}", info.device_type),
            backend: format!("{:?}", info.backend),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }

    /// True for adapters that are real hardware (not a software rasterizer such as lavapipe).
    pub fn is_hardware(&self) -> bool {
        matches!(self.device_type.as_str(), "DiscreteGpu" | "IntegratedGpu" | "VirtualGpu")
    }
}

/// Every adapter wgpu sees (honours `WGPU_BACKEND`).
pub fn adapters() -> Vec<AdapterReport> {
    let instance = instance();
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| AdapterReport::from_info(&a.get_info()))
        .collect()
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
