//! [`GpuContext`]: an opened adapter with its device, queue and limits, the kernel pipelines (built on first use)
//! and the choices that depend on the adapter (which GEMM kernels, which kernel form).

use super::adapter::AdapterReport;
use super::kernel_source::Form;
use super::pipelines::Pipelines;
use super::{profile, GemmKernel, GpuBuf};
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
    /// Whether the device has the `SHADER_F16` feature (the f16 path's kernels compile).
    pub(super) f16: bool,
    /// Whether the f16 path's products run on tensor cores, and if not, why not.
    pub(super) tensor_cores: std::sync::Mutex<std::result::Result<TensorCores, String>>,
}

impl GpuContext {
    /// Opens an adapter: the one whose name contains `name` when given, else a hardware GPU, else (only when
    /// `allow_software`) a software adapter such as lavapipe. `Ok(None)` when none fits.
    pub(super) fn open(name: Option<&str>, allow_software: bool) -> Result<Option<GpuContext>> {
        let instance = super::adapter::instance();
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
        let mut features =
            if profiling { adapter.features() & wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        let tensor_cores = tensor_cores(adapter);
        let experimental_features = if tensor_cores.is_ok() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: wgpu asks its user to acknowledge that an experimental feature may have bugs that safe code
            // can hit. Only cooperative matrices are enabled, and only gemm_coop.wgsl uses them: it runs with
            // wgpu's bounds checks, reads and writes only workgroup memory it staged (zeros past the edges) with
            // cooperative loads and stores whose offsets stay inside those arrays, and the context checks its
            // results against the f16 kernel on this device before any product uses it (`Precision`).
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("embjob"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
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
            f16,
            tensor_cores: std::sync::Mutex::new(tensor_cores.map(|()| TensorCores::Unchecked)),
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

/// The tensor-core kernel's state on a device that offers cooperative matrices: checked against the f16 kernel on
/// first use (`Checked`), or not yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TensorCores {
    Unchecked,
    Checked,
}

/// Whether `adapter` can run gemm_coop.wgsl: cooperative matrices with a 16×16×16 configuration of f16 inputs and
/// f32 accumulators (as its `cooperative_matrix_properties` lists them: never assumed), f16 shaders, and subgroups
/// of exactly 32 invocations (the kernel's four subgroups per workgroup); otherwise why not.
fn tensor_cores(adapter: &wgpu::Adapter) -> std::result::Result<(), String> {
    let features = adapter.features();
    if !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
        return Err("the adapter has no cooperative matrices".into());
    }
    if !features.contains(wgpu::Features::SHADER_F16) {
        return Err("the adapter has no f16 shaders".into());
    }
    let info = adapter.get_info();
    if info.subgroup_min_size != 32 || info.subgroup_max_size != 32 {
        return Err(format!(
            "subgroups of {} to {} invocations (the tensor-core kernel needs exactly 32)",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    let wanted = |c: &wgpu::CooperativeMatrixProperties| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    };
    if !adapter.cooperative_matrix_properties().iter().any(wanted) {
        return Err("no 16×16×16 configuration with f16 inputs and f32 accumulators".into());
    }
    Ok(())
}
