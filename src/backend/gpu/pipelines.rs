//! Kernels to pipelines and the one generic dispatch. Pipelines are built on first use from the registry
//! (`kernels.rs`), one per kernel and, for the GEMMs, per transpose combination, so a kernel that a run never uses
//! is never compiled (Mesa's lavapipe compiles on first dispatch, and the 128×128 GEMM costs it minutes).
//! Uniform buffers and bind groups are cached per (pipeline, buffers, parameters), so a dispatch that repeats
//! (most of a training step) reuses them; the cache is dropped when a resident tensor is released or it grows past
//! a bound, so it never keeps a freed tensor's buffer alive for long.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use wgpu::util::DeviceExt;

use super::kernel_source::Form;
use super::kernels::{self, Kernel};
use super::params::KernelParams;
use super::GpuContext;
use crate::backend::MatDims;
use crate::error::{Error, Result};

/// Proof that a GEMM's operands hold its shape: the trusted GEMM kernels are dispatched only with one, and only
/// [`CheckedGemm::new`] makes one (its field is private to this file).
pub(super) struct CheckedGemm(());

impl CheckedGemm {
    /// The operands (lengths of A, B, C and the bias, if any) hold m×k, k×n and m×n values (n for a bias), every
    /// product computed without overflow, and each dimension fits the kernels' u32 parameters.
    pub(super) fn new(a: usize, b: usize, c: usize, bias: Option<usize>, d: MatDims) -> Result<CheckedGemm> {
        let fits = |x: usize, y: usize, have: usize| x.checked_mul(y).is_some_and(|need| need <= have);
        let in_u32 = [d.m, d.n, d.k].iter().all(|&x| u32::try_from(x).is_ok());
        let ok = in_u32 && fits(d.m, d.k, a) && fits(d.k, d.n, b) && fits(d.m, d.n, c) && bias.is_none_or(|l| l >= d.n);
        if !ok {
            let bias = bias.map_or(String::new(), |l| format!(" (bias {l})"));
            return Err(Error::Internal(format!(
                "gemm {}×{}×{}: operands of {a}, {b} and {c} values{bias} are too small (or the shape overflows)",
                d.m, d.n, d.k
            )));
        }
        Ok(CheckedGemm(()))
    }
}

/// Cached bind groups beyond this are dropped (one-shot products would otherwise keep their buffers alive).
const MAX_CACHED_BIND_GROUPS: usize = 512;

pub(super) struct Pipelines {
    form: Form,
    modules: Mutex<HashMap<(&'static str, bool), wgpu::ShaderModule>>,
    built: Mutex<HashMap<(Kernel, u8), wgpu::ComputePipeline>>,
    bind_groups: Mutex<BindGroups>,
    /// Bumped by every released resident tensor (see `backend.rs`).
    pub(super) released: Arc<AtomicU64>,
}

#[derive(Default)]
struct BindGroups {
    map: HashMap<BindKey, (wgpu::Buffer, wgpu::BindGroup)>,
    released_seen: u64,
}

/// A dispatch's pipeline, buffers and parameters.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    buffers: Vec<(u32, wgpu::Buffer)>,
    params: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Pipelines {
    pub(super) fn new(form: Form) -> Result<Pipelines> {
        // The kernel sources are checked (expanded) up front, so a bad EMBJOB_SHADER_DIR or template fails at open.
        for (name, _) in kernels::FILES {
            kernels::source_for_run(name, form)?;
        }
        Ok(Pipelines {
            form,
            modules: Mutex::default(),
            built: Mutex::default(),
            bind_groups: Mutex::default(),
            released: Arc::default(),
        })
    }
}

/// Which pipeline of a kernel: the transposes of a GEMM (override constants), 0 for every other kernel.
pub(super) fn variant(ta: bool, tb: bool) -> u8 {
    2 * u8::from(ta) + u8::from(tb)
}

impl GpuContext {
    /// The kernel's source as this context compiles it.
    pub(super) fn kernel_source(&self, kernel: Kernel) -> Result<std::borrow::Cow<'static, str>> {
        kernels::source_for_run(kernel.spec().file, self.pipelines.form)
    }

    /// The square output tile of a GEMM kernel (its `const TILE`), which sizes its dispatch.
    pub(super) fn tile(&self, kernel: Kernel) -> Result<u32> {
        Ok(kernels::tile_of(&self.kernel_source(kernel)?))
    }

    fn module(&self, kernel: Kernel) -> Result<wgpu::ShaderModule> {
        let spec = kernel.spec();
        let mut modules = lock(&self.pipelines.modules);
        if let Some(m) = modules.get(&(spec.file, spec.trusted)) {
            return Ok(m.clone());
        }
        let src = self.kernel_source(kernel)?;
        let desc = wgpu::ShaderModuleDescriptor { label: Some(spec.file), source: wgpu::ShaderSource::Wgsl(src) };
        let module = if spec.trusted {
            // SAFETY: only the GEMM kernels are trusted (gemm, gemm_tiled, gemm_tiled128 and gemm_f16, whose loads
            // and stores are gemm's with B read as f16; not gemm_coop). They are the one hot loop, and wgpu's injected checks (a
            // clamp on every load, a counter on every loop) cost them most of their speed. They cannot index out of
            // bounds: every row and column they read is clamped to m − 1 / n − 1 and k to its slice below p.k
            // (the tiled kernels guard their loads by row < m, col < n and k < k_end), every write is guarded by
            // row < m and col < n (and so is the epilogue's read of the bias at col), and
            // `GpuContext::gemm` checks that the buffers hold m×k, k×n and m×n values (splits×m×n for the
            // split-k scratch, n for a bias), with checked arithmetic, before dispatching: it alone makes the
            // `CheckedGemm` that `dispatch_trusted` takes, and `dispatch` refuses these kernels. Their loops end
            // at k and at the slice count. A swapped kernel (EMBJOB_SHADER_DIR) needs the `kernel-dev` cargo feature, off by default.
            // Parity tests with poisoned outputs cover every transpose, edge tiles and splits.
            unsafe { self.device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
        } else {
            self.device.create_shader_module(desc)
        };
        modules.insert((spec.file, spec.trusted), module.clone());
        Ok(module)
    }

    /// The pipeline of `kernel` (and transposes), built on first use.
    pub(super) fn pipeline(&self, kernel: Kernel, variant: u8) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = lock(&self.pipelines.built).get(&(kernel, variant)) {
            return Ok(p.clone());
        }
        let spec = kernel.spec();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self.module(kernel)?;
        let constants = [("TA", f64::from(variant >> 1)), ("TB", f64::from(variant & 1))];
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(spec.entry),
            layout: None,
            module: &module,
            entry_point: Some(spec.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: if spec.transposes { &constants } else { &[] },
                ..Default::default()
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building the {kernel:?} pipeline: {e}")));
        }
        lock(&self.pipelines.built).insert((kernel, variant), pipeline.clone());
        Ok(pipeline)
    }

    /// Records one dispatch of `kernel` with its parameters (uniform binding 0) and storage buffers
    /// (binding, buffer), over `groups` workgroups. Every kernel but the trusted GEMMs: those runs without bounds
    /// checks, so they go through [`GpuContext::dispatch_trusted`] with the proof that their operands were checked.
    pub(super) fn dispatch<P: KernelParams>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        variant: u8,
        params: &P,
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        if kernel.spec().trusted {
            return Err(Error::Internal(format!("{kernel:?} runs unchecked: dispatch it through GpuContext::gemm")));
        }
        self.record_dispatch(enc, kernel, variant, params, entries, groups)
    }

    /// [`GpuContext::dispatch`] for a trusted GEMM kernel, whose operands `GpuContext::gemm` checked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dispatch_trusted<P: KernelParams>(
        &self,
        _checked: &CheckedGemm,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        variant: u8,
        params: &P,
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        self.record_dispatch(enc, kernel, variant, params, entries, groups)
    }

    fn record_dispatch<P: KernelParams>(
        &self,
        enc: &mut wgpu::CommandEncoder,
        kernel: Kernel,
        variant: u8,
        params: &P,
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32, u32),
    ) -> Result<()> {
        let spec = kernel.spec();
        if spec.params.name != P::WGSL {
            return Err(Error::Internal(format!("{kernel:?} takes {}, not {}", spec.params.name, P::WGSL)));
        }
        let pipeline = self.pipeline(kernel, variant)?;
        let bytes: &[u8] = bytemuck::bytes_of(params);
        let key = BindKey {
            pipeline: pipeline.clone(),
            buffers: entries.iter().map(|(b, buf)| (*b, (*buf).clone())).collect(),
            params: bytes.to_vec(),
        };
        let mut cache = lock(&self.pipelines.bind_groups);
        let released = self.pipelines.released.load(Ordering::Relaxed);
        if cache.map.len() > MAX_CACHED_BIND_GROUPS || cache.released_seen != released {
            cache.map.clear();
            cache.released_seen = released;
        }
        let (_, bg) = cache.map.entry(key).or_insert_with(|| {
            let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let layout = pipeline.get_bind_group_layout(0);
            let mut all: Vec<wgpu::BindGroupEntry> =
                vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
            all.extend(
                entries.iter().map(|(b, buf)| wgpu::BindGroupEntry { binding: *b, resource: buf.as_entire_binding() }),
            );
            let bg = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &all,
            });
            (uniform, bg)
        });
        let timestamp_writes = self.profiler.as_ref().and_then(|p| {
            p.next(|| format!("{kernel:?}{} ({}×{}×{} groups)", params.describe(), groups.0, groups.1, groups.2))
        });
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &*bg, &[]);
        if groups.0 > 0 && groups.1 > 0 && groups.2 > 0 {
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        Ok(())
    }
}

/// Workgroups for `n` invocations of a 64-wide kernel that reads its index as gid.x + gid.y · 65535 · 64.
pub(super) fn groups_1d(n: usize) -> (u32, u32, u32) {
    let w = n.div_ceil(64) as u32;
    (w.min(65535), w.div_ceil(65535), 1)
}

/// One workgroup per row, rows laid out as wg.x + wg.y · 65535.
pub(super) fn groups_per_row(rows: usize) -> (u32, u32, u32) {
    ((rows as u32).min(65535), (rows as u32).div_ceil(65535), 1)
}
