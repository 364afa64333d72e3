//! The wgpu backend's device and kernels: adapter selection with the adapter's own limits, the compute pipelines
//! (built once), GPU buffers and the operations that record dispatches into a command encoder. Each operation has a
//! CPU twin in `cpu_kernels` and a parity test against it.
//!
//! [`Gpu`] implements the [`super::Backend`] trait on top of these operations.

mod backend;
pub mod kernels;
mod profile;

pub use backend::Gpu;

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::device::AdapterReport;
use super::{AdamStep, MatDims};
use crate::error::{Error, Result};

/// A device with every pipeline built.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub adapter: AdapterReport,
    pub limits: wgpu::Limits,
    pipelines: Pipelines,
    /// Uniform buffers and bind groups, reused when a dispatch repeats (every training step does).
    bind_groups: std::sync::Mutex<std::collections::HashMap<BindKey, (wgpu::Buffer, wgpu::BindGroup)>>,
    /// Partial products of split-k GEMMs (grown on demand, reused).
    split_scratch: std::sync::Mutex<Option<GpuBuf>>,
    /// Kernel timings (`EMBJOB_GPU_PROFILE=1`).
    profiler: Option<profile::Profiler>,
    /// The GEMM kernels [`GpuContext::matmul`] uses: tiled ones on hardware GPUs, register-only on software adapters.
    pub gemm_kernel: GemmKernel,
}

/// The GEMM kernels (same contract, each parity-tested).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKernel {
    /// shaders/gemm.wgsl: 4×4 register blocks, no workgroup memory (faster on lavapipe).
    Register,
    /// shaders/gemm_tiled.wgsl: 64×64 output tiles from workgroup memory. As the context's choice: this kernel for
    /// products under 2^30 multiply-adds, [`GemmKernel::Tiled128`] for larger ones.
    Tiled,
    /// shaders/gemm_tiled128.wgsl: 128×128 output tiles, 8×8 per invocation (large products on hardware GPUs).
    Tiled128,
}

/// Products of at least this many multiply-adds use the 128×128 kernel on hardware GPUs (H200: at batch 4096 the
/// model trains 29 % faster with it; at batch 256 the 64×64 kernel's 4× more workgroups train 25 % faster).
const LARGE_GEMM: usize = 1 << 30;

/// A dispatch's pipeline, buffers and parameters.
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    buffers: Vec<(u32, wgpu::Buffer)>,
    params: Vec<u8>,
}

/// Cached bind groups beyond this are dropped (one-shot products would otherwise keep their buffers alive).
const MAX_CACHED_BIND_GROUPS: usize = 512;

struct Pipelines {
    /// Indexed by `2·ta + tb`.
    gemm: [wgpu::ComputePipeline; 4],
    gemm_tiled: [wgpu::ComputePipeline; 4],
    gemm_tiled128: [wgpu::ComputePipeline; 4],
    /// Output tile of each workgroup of the register, tiled and tiled128 kernels (see `kernels::tile_of`).
    gemm_tiles: [u32; 3],
    gemm_reduce: wgpu::ComputePipeline,
    softmax: wgpu::ComputePipeline,
    bag_forward: wgpu::ComputePipeline,
    bag_backward: wgpu::ComputePipeline,
    bias_act: wgpu::ComputePipeline,
    relu_backward: wgpu::ComputePipeline,
    column_sums: wgpu::ComputePipeline,
    column_sums_chunks: wgpu::ComputePipeline,
    adam: wgpu::ComputePipeline,
    sgd: wgpu::ComputePipeline,
    csr_mul: wgpu::ComputePipeline,
    outer: wgpu::ComputePipeline,
    ranks: wgpu::ComputePipeline,
    normalize: wgpu::ComputePipeline,
    top_k: wgpu::ComputePipeline,
}

/// An f32 buffer on the device.
pub struct GpuBuf {
    pub buf: wgpu::Buffer,
    pub len: usize,
}

/// A u32 buffer on the device.
pub struct GpuIdx {
    pub buf: wgpu::Buffer,
    pub len: usize,
}

impl GpuContext {
    /// Opens an adapter: the one whose name contains `name` when given, else a hardware GPU, else (only when
    /// `allow_software`) a software adapter such as lavapipe. `Ok(None)` when none fits.
    pub fn open(name: Option<&str>, allow_software: bool) -> Result<Option<GpuContext>> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
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
        let pipelines = Pipelines::new(&device)?;
        let profiler = profile::Profiler::new(&device, &queue);
        let report = AdapterReport::from_info(&adapter.get_info());
        let gemm_kernel = if report.is_hardware() { GemmKernel::Tiled } else { GemmKernel::Register };
        Ok(Some(GpuContext {
            device,
            queue,
            adapter: report,
            limits,
            pipelines,
            bind_groups: Default::default(),
            split_scratch: Default::default(),
            profiler,
            gemm_kernel,
        }))
    }

    /// A buffer holding `data`.
    pub fn upload(&self, data: &[f32]) -> Result<GpuBuf> {
        self.check_size("tensor", data.len())?;
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(if data.is_empty() { &[0.0f32] } else { data }),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuBuf { buf, len: data.len() })
    }

    /// An index buffer holding `data`.
    pub fn upload_idx(&self, data: &[u32]) -> Result<GpuIdx> {
        self.check_size("index buffer", data.len())?;
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(if data.is_empty() { &[0u32] } else { data }),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuIdx { buf, len: data.len() })
    }

    /// Refuses a buffer over the adapter's storage-binding limit, naming the tensor and the limit.
    fn check_size(&self, what: &str, len: usize) -> Result<()> {
        let bytes = len as u64 * 4;
        let limit = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > limit {
            return Err(Error::Gpu(format!(
                "{what} of {len} values ({:.1} MiB) exceeds the adapter's max_storage_buffer_binding_size of {:.1} MiB",
                bytes as f64 / 1048576.0,
                limit as f64 / 1048576.0
            )));
        }
        Ok(())
    }

    /// Copies a buffer back to the host (waits for the queue).
    pub fn download(&self, b: &GpuBuf) -> Result<Vec<f32>> {
        let size = (b.len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&b.buf, 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback callback dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let view = staging.get_mapped_range(..).map_err(|e| Error::Gpu(format!("reading back: {e:?}")))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view)[..b.len].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// A command encoder for a batch of dispatches; `submit` sends it.
    pub fn encoder(&self) -> wgpu::CommandEncoder {
        self.device.create_command_encoder(&Default::default())
    }

    pub fn submit(&self, enc: wgpu::CommandEncoder) {
        match &self.profiler {
            Some(p) => p.submit(&self.device, &self.queue, enc),
            None => {
                self.queue.submit([enc.finish()]);
            }
        }
    }

    /// Kernel times since the last call, when profiling (`EMBJOB_GPU_PROFILE=1` on an adapter with timestamps).
    pub fn profile_report(&self) -> Option<String> {
        self.profiler.as_ref().map(profile::Profiler::report)
    }

    /// Records one dispatch of `pipeline` with its parameters (uniform binding 0) and storage buffers. The uniform
    /// buffer and the bind group are created once per distinct (pipeline, buffers, parameters) and reused.
    fn dispatch(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
    ) {
        self.dispatch3(enc, pipeline, params, entries, groups, 1);
    }

    /// [`GpuContext::dispatch`] with `z` workgroups along z.
    fn dispatch3(
        &self,
        enc: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        params: &[u8],
        entries: &[(u32, &wgpu::Buffer)],
        groups: (u32, u32),
        z: u32,
    ) {
        let key = BindKey {
            pipeline: pipeline.clone(),
            buffers: entries.iter().map(|(b, buf)| (*b, (*buf).clone())).collect(),
            params: params.to_vec(),
        };
        let mut cache = match self.bind_groups.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if cache.len() > MAX_CACHED_BIND_GROUPS {
            cache.clear();
        }
        let (_, bg) = cache.entry(key).or_insert_with(|| {
            let uniform = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: params,
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
        let timestamp_writes =
            self.profiler.as_ref().and_then(|p| p.next(|| self.pipelines.label(pipeline, params, groups)));
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &*bg, &[]);
        if groups.0 > 0 && groups.1 > 0 && z > 0 {
            pass.dispatch_workgroups(groups.0, groups.1, z);
        }
    }

    /// `c = op(a)·op(b) + beta·c`. Products with few output tiles and a long k (the model's `dlogits·Wᵀ`: 256 × 64
    /// outputs over 6,169 items) split k into slices that run side by side and add up in a second pass, in a fixed
    /// order, so the result still repeats bit for bit.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        enc: &mut wgpu::CommandEncoder,
        a: &GpuBuf,
        ta: bool,
        b: &GpuBuf,
        tb: bool,
        c: &GpuBuf,
        d: MatDims,
        beta: f32,
    ) -> Result<()> {
        let kernel = match self.gemm_kernel {
            GemmKernel::Tiled if d.m.saturating_mul(d.n).saturating_mul(d.k) >= LARGE_GEMM => GemmKernel::Tiled128,
            k => k,
        };
        self.matmul_with(kernel, enc, a, ta, b, tb, c, d, beta)
    }

    /// [`GpuContext::matmul`] with a chosen kernel (the parity tests run every one).
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_with(
        &self,
        kernel: GemmKernel,
        enc: &mut wgpu::CommandEncoder,
        a: &GpuBuf,
        ta: bool,
        b: &GpuBuf,
        tb: bool,
        c: &GpuBuf,
        d: MatDims,
        beta: f32,
    ) -> Result<()> {
        // The GEMM kernel runs without runtime bounds checks (see `Pipelines::new`): the operands must hold their
        // shapes, checked here.
        if a.len < d.m * d.k || b.len < d.k * d.n || c.len < d.m * d.n {
            return Err(Error::Internal(format!(
                "gemm {}×{}×{}: operands of {}, {} and {} values are too small",
                d.m, d.n, d.k, a.len, b.len, c.len
            )));
        }
        let (pipelines, tile) = match kernel {
            GemmKernel::Register => (&self.pipelines.gemm, self.pipelines.gemm_tiles[0]),
            GemmKernel::Tiled => (&self.pipelines.gemm_tiled, self.pipelines.gemm_tiles[1]),
            GemmKernel::Tiled128 => (&self.pipelines.gemm_tiled128, self.pipelines.gemm_tiles[2]),
        };
        let groups = ((d.n as u32).div_ceil(tile), (d.m as u32).div_ceil(tile));
        let splits = self.k_splits(d, tile as usize);
        let pipeline = &pipelines[2 * usize::from(ta) + usize::from(tb)];
        if splits > 1 {
            let kc = d.k.div_ceil(splits);
            let splits = d.k.div_ceil(kc);
            if let Some(scratch) = self.scratch(splits * d.m * d.n) {
                let params = gemm_params(d, ta, tb, 0.0, kc, splits);
                let params: &[u8] = bytemuck::cast_slice(&params);
                self.dispatch3(
                    enc,
                    pipeline,
                    params,
                    &[(1, &a.buf), (2, &b.buf), (3, &scratch)],
                    groups,
                    splits as u32,
                );
                let params = gemm_params(d, ta, tb, beta, kc, splits);
                let params: &[u8] = bytemuck::cast_slice(&params);
                self.dispatch(
                    enc,
                    &self.pipelines.gemm_reduce,
                    params,
                    &[(3, &c.buf), (4, &scratch)],
                    groups_1d(d.m * d.n),
                );
                return Ok(());
            }
        }
        let params = gemm_params(d, ta, tb, beta, d.k, 1);
        let params: &[u8] = bytemuck::cast_slice(&params);
        self.dispatch(enc, pipeline, params, &[(1, &a.buf), (2, &b.buf), (3, &c.buf)], groups);
        Ok(())
    }

    /// How many slices of k a product runs in: enough for about 256 workgroups when its output tiles (`tile` square)
    /// are fewer than 128 (a large GPU has about that many cores), each slice at least 256 long. A function of the
    /// shape and the kernel only, the same on every adapter.
    fn k_splits(&self, d: MatDims, tile: usize) -> usize {
        let tiles = d.m.div_ceil(tile) * d.n.div_ceil(tile);
        if tiles >= 128 || d.k < 1024 {
            return 1;
        }
        (256 / tiles).clamp(1, d.k / 256).min(64)
    }

    /// The split-k scratch buffer with room for `len` values (grown when needed), `None` over the binding limit.
    fn scratch(&self, len: usize) -> Option<wgpu::Buffer> {
        let mut slot = match self.split_scratch.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.as_ref().is_none_or(|b| b.len < len) {
            let bytes = (len as u64 * 4).next_power_of_two();
            if self.check_size("split-k partial products", (bytes / 4) as usize).is_err() {
                return None;
            }
            let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("split-k partials"),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            *slot = Some(GpuBuf { buf, len: (bytes / 4) as usize });
        }
        slot.as_ref().map(|b| b.buf.clone())
    }

    /// Fused softmax cross-entropy (see shaders/softmax_xent.wgsl).
    pub fn softmax_xent(
        &self,
        enc: &mut wgpu::CommandEncoder,
        logits: &GpuBuf,
        targets: &GpuIdx,
        rows: usize,
        cols: usize,
        losses: &GpuBuf,
    ) {
        let raw = [rows as u32, cols as u32, 0, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        let groups = ((rows as u32).min(65535), (rows as u32).div_ceil(65535));
        self.dispatch(
            enc,
            &self.pipelines.softmax,
            params,
            &[(1, &logits.buf), (2, &targets.buf), (3, &losses.buf)],
            groups,
        );
    }

    /// Gather-and-pool.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_bag(
        &self,
        enc: &mut wgpu::CommandEncoder,
        table: &GpuBuf,
        dim: usize,
        (items, offsets, weights): (&GpuIdx, &GpuIdx, &GpuBuf),
        bags: usize,
        mean: bool,
        out: &GpuBuf,
    ) {
        let raw = [bags as u32, dim as u32, mean as u32, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(
            enc,
            &self.pipelines.bag_forward,
            params,
            &[(1, &table.buf), (2, &items.buf), (3, &offsets.buf), (4, &out.buf), (10, &weights.buf)],
            groups_1d(bags * dim),
        );
    }

    /// The embedding gradient as a segment sum; clears `grad` first.
    #[allow(clippy::too_many_arguments)]
    pub fn embedding_bag_backward(
        &self,
        enc: &mut wgpu::CommandEncoder,
        d_pooled: &GpuBuf,
        dim: usize,
        (offsets, weights): (&GpuIdx, &GpuBuf),
        (seg_items, seg_offsets, seg_examples, seg_weights): (&GpuIdx, &GpuIdx, &GpuIdx, &GpuBuf),
        mean: bool,
        grad: &GpuBuf,
    ) {
        enc.clear_buffer(&grad.buf, 0, None);
        let segments = seg_items.len;
        let raw = [segments as u32, dim as u32, mean as u32, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(
            enc,
            &self.pipelines.bag_backward,
            params,
            &[
                (3, &offsets.buf),
                (5, &d_pooled.buf),
                (6, &seg_items.buf),
                (7, &seg_offsets.buf),
                (8, &seg_examples.buf),
                (9, &grad.buf),
                (10, &weights.buf),
                (11, &seg_weights.buf),
            ],
            groups_1d(segments * dim),
        );
    }

    /// `x = act(x + bias)`.
    pub fn bias_act(
        &self,
        enc: &mut wgpu::CommandEncoder,
        x: &GpuBuf,
        bias: &GpuBuf,
        rows: usize,
        cols: usize,
        relu: bool,
    ) {
        let raw = [rows as u32, cols as u32, relu as u32, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(enc, &self.pipelines.bias_act, params, &[(1, &x.buf), (2, &bias.buf)], groups_1d(rows * cols));
    }

    /// `grad *= (act > 0)`.
    pub fn relu_backward(&self, enc: &mut wgpu::CommandEncoder, grad: &GpuBuf, act: &GpuBuf) {
        let raw = [1u32, grad.len as u32, 0, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(
            enc,
            &self.pipelines.relu_backward,
            params,
            &[(1, &grad.buf), (2, &act.buf)],
            groups_1d(grad.len),
        );
    }

    /// `out[c] = Σ_r x[r][c]`.
    /// Column sums of a rows × cols matrix. Tall ones (the bias gradients at large batches) sum chunks of 256 rows
    /// side by side, then the chunks in order.
    pub fn column_sums(&self, enc: &mut wgpu::CommandEncoder, x: &GpuBuf, rows: usize, cols: usize, out: &GpuBuf) {
        const CHUNK: usize = 256;
        let chunks = rows.div_ceil(CHUNK);
        if chunks > 1 {
            if let Some(scratch) = self.scratch(chunks * cols) {
                let raw = [rows as u32, cols as u32, 0, CHUNK as u32];
                let params: &[u8] = bytemuck::cast_slice(&raw);
                let (pipe, entries) = (&self.pipelines.column_sums_chunks, [(3, &scratch), (4, &x.buf)]);
                self.dispatch3(enc, pipe, params, &entries, groups_1d(cols), chunks as u32);
                let raw = [chunks as u32, cols as u32, 0, 0];
                let params: &[u8] = bytemuck::cast_slice(&raw);
                let entries = [(3, &out.buf), (4, &scratch)];
                self.dispatch(enc, &self.pipelines.column_sums, params, &entries, groups_1d(cols));
                return;
            }
        }
        let raw = [rows as u32, cols as u32, 0, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(enc, &self.pipelines.column_sums, params, &[(3, &out.buf), (4, &x.buf)], groups_1d(cols));
    }

    /// One Adam step.
    pub fn adam(
        &self,
        enc: &mut wgpu::CommandEncoder,
        param: &GpuBuf,
        grad: &GpuBuf,
        m: &GpuBuf,
        v: &GpuBuf,
        s: AdamStep,
    ) {
        let bc1 = 1.0 - s.beta1.powi(s.t as i32);
        let bc2 = 1.0 - s.beta2.powi(s.t as i32);
        let params: [u32; 12] = [
            param.len as u32,
            0,
            s.lr.to_bits(),
            s.beta1.to_bits(),
            s.beta2.to_bits(),
            s.eps.to_bits(),
            s.weight_decay.to_bits(),
            bc1.to_bits(),
            (1.0 / bc2.sqrt()).to_bits(),
            0f32.to_bits(),
            0,
            0,
        ];
        let params: &[u8] = bytemuck::cast_slice(&params);
        self.dispatch(
            enc,
            &self.pipelines.adam,
            params,
            &[(1, &param.buf), (2, &grad.buf), (3, &m.buf), (4, &v.buf)],
            groups_1d(param.len),
        );
    }

    /// One SGD step with momentum (`velocity` holds the momentum buffer).
    #[allow(clippy::too_many_arguments)]
    pub fn sgd(
        &self,
        enc: &mut wgpu::CommandEncoder,
        param: &GpuBuf,
        grad: &GpuBuf,
        velocity: &GpuBuf,
        lr: f32,
        momentum: f32,
        weight_decay: f32,
    ) {
        let params: [u32; 12] =
            [param.len as u32, 0, lr.to_bits(), 0, 0, 0, weight_decay.to_bits(), 0, 0, momentum.to_bits(), 0, 0];
        let params: &[u8] = bytemuck::cast_slice(&params);
        self.dispatch(
            enc,
            &self.pipelines.sgd,
            params,
            &[(1, &param.buf), (2, &grad.buf), (3, &velocity.buf)],
            groups_1d(param.len),
        );
    }
}

impl GpuContext {
    /// `out = X·B` for a CSR `X` (rows×cols, uploaded as indptr / indices / values) and dense `B` (cols×k).
    #[allow(clippy::too_many_arguments)]
    pub fn csr_mul(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        cols: usize,
        csr: (&GpuIdx, &GpuIdx, &GpuBuf),
        b: &GpuBuf,
        k: usize,
        out: &GpuBuf,
    ) {
        let raw = [rows as u32, cols as u32, k as u32, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(
            enc,
            &self.pipelines.csr_mul,
            params,
            &[(1, &csr.0.buf), (2, &csr.1.buf), (3, &csr.2.buf), (4, &b.buf), (5, &out.buf)],
            groups_1d(rows * k),
        );
    }

    /// `out = X·Xᵀ` (rows×rows) for a CSR `X`.
    pub fn csr_outer(
        &self,
        enc: &mut wgpu::CommandEncoder,
        rows: usize,
        cols: usize,
        csr: (&GpuIdx, &GpuIdx, &GpuBuf),
        out: &GpuBuf,
    ) {
        let raw = [rows as u32, cols as u32, 0, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        self.dispatch(
            enc,
            &self.pipelines.outer,
            params,
            &[(1, &csr.0.buf), (2, &csr.1.buf), (3, &csr.2.buf), (5, &out.buf)],
            groups_1d(rows * rows),
        );
    }

    /// Masked target ranks (see shaders/ranking.wgsl).
    #[allow(clippy::too_many_arguments)]
    pub fn target_ranks(
        &self,
        enc: &mut wgpu::CommandEncoder,
        scores: &GpuBuf,
        rows: usize,
        cols: usize,
        targets: &GpuIdx,
        mask_items: &GpuIdx,
        mask_offsets: &GpuIdx,
        ranks: &GpuBuf,
    ) {
        let raw = [rows as u32, cols as u32, 0, 0];
        self.dispatch(
            enc,
            &self.pipelines.ranks,
            bytemuck::cast_slice(&raw),
            &[(1, &scores.buf), (2, &targets.buf), (3, &mask_items.buf), (4, &mask_offsets.buf), (5, &ranks.buf)],
            ((rows as u32).min(65535), (rows as u32).div_ceil(65535)),
        );
    }

    /// Most neighbours per row the `top_k` kernel keeps (its private arrays).
    pub const MAX_NEIGHBORS: usize = 64;

    /// Cosine top-k of every row of `x` (n × dim), itself excluded; `k` ≤ [`Self::MAX_NEIGHBORS`].
    pub fn cosine_top_k(&self, x: &GpuBuf, n: usize, dim: usize, k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let k = k.min(n.saturating_sub(1)).min(Self::MAX_NEIGHBORS);
        let unit = self.upload(&vec![0.0; n * dim])?;
        let out_idx = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("neighbour ids"),
            size: (n * k).max(1) as u64 * 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let out_sim = self.upload(&vec![0.0; n * k])?;
        let raw = [n as u32, dim as u32, k as u32, 0];
        let params: &[u8] = bytemuck::cast_slice(&raw);
        let mut enc = self.encoder();
        self.dispatch(&mut enc, &self.pipelines.normalize, params, &[(1, &x.buf), (2, &unit.buf)], groups_1d(n));
        self.dispatch(
            &mut enc,
            &self.pipelines.top_k,
            params,
            &[(2, &unit.buf), (3, &out_idx), (4, &out_sim.buf)],
            groups_1d(n),
        );
        self.submit(enc);
        let sims = self.download(&out_sim)?;
        let ids: Vec<u32> =
            self.download(&GpuBuf { buf: out_idx, len: n * k })?.into_iter().map(f32::to_bits).collect();
        Ok((ids, sims))
    }

    /// Overwrites the front of a buffer (queued before the next submission's commands).
    pub fn write_f32(&self, b: &GpuBuf, data: &[f32]) {
        if !data.is_empty() {
            self.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
    }

    /// Overwrites the front of an index buffer.
    pub fn write_u32(&self, b: &GpuIdx, data: &[u32]) {
        if !data.is_empty() {
            self.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
    }
}

/// The GEMM uniform (see `GemmParams` in shaders/gemm.wgsl).
fn gemm_params(d: MatDims, ta: bool, tb: bool, beta: f32, kc: usize, splits: usize) -> [u32; 8] {
    [d.m as u32, d.n as u32, d.k as u32, ta as u32, tb as u32, beta.to_bits(), kc as u32, splits as u32]
}

/// Workgroups for `n` invocations of a 64-wide kernel that reads its index as gid.x + gid.y · 65535 · 64.
fn groups_1d(n: usize) -> (u32, u32) {
    let w = n.div_ceil(64) as u32;
    (w.min(65535), w.div_ceil(65535))
}

impl Pipelines {
    fn new(device: &wgpu::Device) -> Result<Pipelines> {
        let module = |name: &str| -> Result<wgpu::ShaderModule> {
            let src = kernels::source_for_run(name)?;
            let desc = wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(src) };
            if name.starts_with("gemm") {
                // SAFETY: the GEMM kernel is the one hot loop, and wgpu's injected checks (a clamp on every load,
                // a counter on every loop) cost it most of its speed. It cannot index out of bounds: every row and
                // column it reads is clamped to m − 1 / n − 1 and k to its slice below p.k, every write is guarded
                // by row < m and col < n, and `GpuContext::matmul` checks that the buffers hold m×k, k×n and m×n
                // values (splits×m×n for the split-k scratch) before dispatching; its loops end at k and at the
                // slice count. Parity tests with poisoned outputs cover every transpose, edge tiles and splits.
                // (A kernel swapped in through EMBJOB_SHADER_DIR for tuning is trusted the same way.)
                Ok(unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) })
            } else {
                Ok(device.create_shader_module(desc))
            }
        };
        let pipeline = |m: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: m,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let gemm_pipeline = |m: &wgpu::ShaderModule, ta: bool, tb: bool| {
            let constants = [("TA", if ta { 1.0 } else { 0.0 }), ("TB", if tb { 1.0 } else { 0.0 })];
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("gemm"),
                layout: None,
                module: m,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
                cache: None,
            })
        };
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let (tiled, tiled128) = (module("gemm_tiled")?, module("gemm_tiled128")?);
        let tile = |name: &str| kernels::source_for_run(name).map(|s| kernels::tile_of(&s));
        let gemm_tiles = [tile("gemm")?, tile("gemm_tiled")?, tile("gemm_tiled128")?];
        let (gemm, softmax, bag, ew, opt) = (
            module("gemm")?,
            module("softmax_xent")?,
            module("embedding_bag")?,
            module("elementwise")?,
            module("optim")?,
        );
        let (sparse, ranking, neighbors) = (module("sparse")?, module("ranking")?, module("neighbors")?);
        let p = Pipelines {
            gemm: [
                gemm_pipeline(&gemm, false, false),
                gemm_pipeline(&gemm, false, true),
                gemm_pipeline(&gemm, true, false),
                gemm_pipeline(&gemm, true, true),
            ],
            gemm_tiled: [
                gemm_pipeline(&tiled, false, false),
                gemm_pipeline(&tiled, false, true),
                gemm_pipeline(&tiled, true, false),
                gemm_pipeline(&tiled, true, true),
            ],
            gemm_tiled128: [
                gemm_pipeline(&tiled128, false, false),
                gemm_pipeline(&tiled128, false, true),
                gemm_pipeline(&tiled128, true, false),
                gemm_pipeline(&tiled128, true, true),
            ],
            gemm_tiles,
            gemm_reduce: pipeline(&gemm, "reduce_splits"),
            softmax: pipeline(&softmax, "main"),
            bag_forward: pipeline(&bag, "forward"),
            bag_backward: pipeline(&bag, "backward"),
            bias_act: pipeline(&ew, "bias_act"),
            relu_backward: pipeline(&ew, "relu_backward"),
            column_sums: pipeline(&ew, "column_sums"),
            column_sums_chunks: pipeline(&ew, "column_sums_chunks"),
            adam: pipeline(&opt, "adam"),
            sgd: pipeline(&opt, "sgd"),
            csr_mul: pipeline(&sparse, "csr_mul"),
            outer: pipeline(&sparse, "outer"),
            ranks: pipeline(&ranking, "main"),
            normalize: pipeline(&neighbors, "normalize"),
            top_k: pipeline(&neighbors, "top_k"),
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("building the compute pipelines: {e}")));
        }
        Ok(p)
    }
    /// A dispatch's name for the profile: the kernel, and for GEMMs the transposes and m × n × k (and k slices).
    fn label(&self, pipeline: &wgpu::ComputePipeline, params: &[u8], groups: (u32, u32)) -> String {
        let named = [
            (&self.gemm_reduce, "gemm split-k reduce"),
            (&self.softmax, "softmax_xent"),
            (&self.bag_forward, "embedding_bag forward"),
            (&self.bag_backward, "embedding_bag backward"),
            (&self.bias_act, "bias_act"),
            (&self.relu_backward, "relu_backward"),
            (&self.column_sums, "column_sums"),
            (&self.column_sums_chunks, "column_sums chunks"),
            (&self.adam, "adam"),
            (&self.sgd, "sgd"),
            (&self.csr_mul, "csr_mul"),
            (&self.outer, "csr outer"),
            (&self.ranks, "ranks"),
            (&self.normalize, "normalize"),
            (&self.top_k, "top_k"),
        ];
        if let Some((_, name)) = named.iter().find(|(p, _)| *p == pipeline) {
            return format!("{name} ({}×{} groups)", groups.0, groups.1);
        }
        let kind = if self.gemm_tiled.contains(pipeline) {
            Some("gemm tiled")
        } else if self.gemm_tiled128.contains(pipeline) {
            Some("gemm tiled128")
        } else if self.gemm.contains(pipeline) {
            Some("gemm")
        } else {
            None
        };
        if let (Some(kind), true) = (kind, params.len() >= 32) {
            let v: Vec<u32> = params.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            let t = |x: u32| if x == 1 { "T" } else { "N" };
            let split = if v[7] > 1 { format!(", k in {} slices", v[7]) } else { String::new() };
            return format!("{kind} {}{} {}×{}×{}{split}", t(v[3]), t(v[4]), v[0], v[1], v[2]);
        }
        "?".into()
    }
}
