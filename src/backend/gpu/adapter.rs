//! wgpu instances and adapters as embjob sees them: every instance comes from [`instance`] (with the Vulkan
//! loader kept quiet), and an adapter is recorded as an [`AdapterReport`].

use serde::Serialize;

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
