//! [`GpuContext`]: an opened adapter with its device, queue and limits, the kernel pipelines (built on first use)
//! and the choices that depend on the adapter (which GEMM kernels, which kernel form).

use super::kernel_source::Form;
use super::pipelines::Pipelines;
use super::{profile, GemmKernel, GpuBuf};
use crate::backend::device::AdapterReport;
use crate::error::{Error, Result};

/// A device and what runs on it.
pub(super) struct GpuContext {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) adapter: AdapterReport,
    pub(super) limits: wgpu::Limits,
    pub(super) pipelines: Pipelines,
    /// Partial products of split-k GEMMs (grown on demand, reused).
    pub(super) split_scratch: std::sync::Mutex<Option<GpuBuf>>,
    /// Kernel timings (`EMBJOB_GPU_PROFILE=1`).
    pub(super) profiler: Option<profile::Profiler>,
    /// The GEMM kernels `GpuContext::gemm` uses: tiled ones on hardware GPUs, register-only on software adapters.
    pub(super) gemm_kernel: GemmKernel,
}

impl GpuContext {
    /// Opens an adapter: the one whose name contains `name` when given, else a hardware GPU, else (only when
    /// `allow_software`) a software adapter such as lavapipe. `Ok(None)` when none fits.
    pub(super) fn open(name: Option<&str>, allow_software: bool) -> Result<Option<GpuContext>> {
        let instance = crate::backend::device::instance();
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        let fits = |a: &wgpu::Adapter, hardware_only: bool| {
            let info = a.get_info();
            match name {
                Some(n) => info.name.to_lowercase().contains(&n.to_lowercase()),
                None => !hardware_only || AdapterReport::from_info(&info).is_hardware(),
            }
        };
        // Vulkan first where an adapter is offered through several backends (GL compiles shaders far more slowly).
        let pick = |hardware_only: bool| {
            adapters
                .iter()
                .filter(|a| fits(a, hardware_only))
                .min_by_key(|a| u8::from(a.get_info().backend != wgpu::Backend::Vulkan))
        };
        let adapter = pick(true).or_else(|| if allow_software || name.is_some() { pick(false) } else { None });
        let Some(adapter) = adapter else { return Ok(None) };
        let limits = adapter.limits();
        let profiling = std::env::var_os("EMBJOB_GPU_PROFILE").is_some();
        let features =
            if profiling { adapter.features() & wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("embjob"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::Gpu(format!("cannot open the adapter '{}': {e}", adapter.get_info().name)))?;
        let report = AdapterReport::from_info(&adapter.get_info());
        let hardware = report.is_hardware();
        let form = if hardware { Form::Measured } else { Form::Compact };
        let pipelines = Pipelines::new(form)?;
        let profiler = profile::Profiler::new(&device, &queue);
        let gemm_kernel = if hardware { GemmKernel::Tiled } else { GemmKernel::Register };
        Ok(Some(GpuContext {
            device,
            queue,
            adapter: report,
            limits,
            pipelines,
            split_scratch: Default::default(),
            profiler,
            gemm_kernel,
        }))
    }

    /// A command encoder for a batch of dispatches; `submit` sends it.
    pub(super) fn encoder(&self) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&Default::default())
    }

    pub(super) fn submit(&self, enc: wgpu::CommandEncoder) {
        match &self.profiler {
            Some(p) => p.submit(&self.device, &self.queue, enc),
            None => {
                self.queue.submit([enc.finish()]);
            }
        }
    }

    /// Kernel times since the last call, when profiling (`EMBJOB_GPU_PROFILE=1` on an adapter with timestamps).
    pub(super) fn profile_report(&self) -> Option<String> {
        self.profiler.as_ref().map(profile::Profiler::report)
    }
}
