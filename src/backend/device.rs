//! Choosing where the math runs: finds wgpu adapters and applies `job.backend` / `--backend` / `EMBJOB_ADAPTER`.

use serde::Serialize;

use crate::config::BackendChoice;
use crate::error::{Error, Result};

/// What a run uses, recorded in run.json.
#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    /// What the config or command line asked for.
    pub requested: BackendChoice,
    /// `cpu` or `gpu`.
    pub used: &'static str,
    /// The GPU adapter looked at or used, when there is one.
    pub adapter: Option<AdapterReport>,
    /// Why `auto` chose what it chose.
    pub reason: String,
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
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| AdapterReport::from_info(&a.get_info()))
        .collect()
}

/// Applies the backend choice. The wgpu compute backend is not part of this build yet, so every choice that would
/// need it is answered here: `auto` runs on the CPU and says why; `gpu` is an error (exit code 4).
pub fn select(requested: BackendChoice) -> Result<BackendReport> {
    let wanted_name = std::env::var("EMBJOB_ADAPTER").ok().filter(|s| !s.is_empty());
    match requested {
        BackendChoice::Cpu => Ok(BackendReport { requested, used: "cpu", adapter: None, reason: "requested".into() }),
        BackendChoice::Gpu => Err(Error::Gpu(
            "the wgpu compute backend is not available in this build; use backend = \"cpu\" or \"auto\"".into(),
        )),
        BackendChoice::Auto => {
            let all = adapters();
            let chosen = match &wanted_name {
                Some(n) => all.iter().find(|a| a.name.to_lowercase().contains(&n.to_lowercase())),
                None => all.iter().find(|a| a.is_hardware()),
            };
            let reason = match (chosen, &wanted_name) {
                (Some(a), _) => format!(
                    "GPU adapter '{}' found, but the wgpu compute backend is not available in this build: using the CPU",
                    a.name
                ),
                (None, Some(n)) => format!("no GPU adapter matches EMBJOB_ADAPTER='{n}': using the CPU"),
                (None, None) if all.is_empty() => "no GPU adapter found: using the CPU".into(),
                (None, None) => format!(
                    "no hardware GPU adapter found (only software: {}): using the CPU",
                    all.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            };
            Ok(BackendReport { requested, used: "cpu", adapter: chosen.cloned(), reason })
        }
    }
}
