//! Device buffers: f32 values ([`GpuBuf`]) and u32 indices ([`GpuIdx`]), uploads and read-backs, and the split-k
//! scratch buffer. A buffer is freed when its last handle is dropped.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::GpuContext;
use crate::error::{Error, Result};

/// An f32 buffer on the device.
#[derive(Clone)]
pub struct GpuBuf {
    pub buf: wgpu::Buffer,
    pub len: usize,
}

/// A u32 buffer on the device.
#[derive(Clone)]
pub struct GpuIdx {
    pub buf: wgpu::Buffer,
    pub len: usize,
}

impl GpuContext {
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
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuIdx { buf, len: data.len() })
    }

    /// Refuses a buffer over the adapter's storage-binding limit, naming the tensor and the limit.
    pub(super) fn check_size(&self, what: &str, len: usize) -> Result<()> {
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
        Ok(bytemuck::cast_slice::<u8, f32>(&self.read_bytes(&b.buf, b.len)?).to_vec())
    }

    /// Copies an index buffer back to the host.
    pub fn download_idx(&self, b: &GpuIdx) -> Result<Vec<u32>> {
        Ok(bytemuck::cast_slice::<u8, u32>(&self.read_bytes(&b.buf, b.len)?).to_vec())
    }

    /// The first `len` 4-byte values of `buf`.
    fn read_bytes(&self, buf: &wgpu::Buffer, len: usize) -> Result<Vec<u8>> {
        let size = (len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
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
        let out = view[..len * 4].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Overwrites the front of a buffer (queued before the next submission's commands).
    pub fn write_f32(&self, b: &GpuBuf, data: &[f32]) -> Result<()> {
        if data.len() > b.len {
            return Err(Error::Internal(format!("gpu: write of {} values into {}", data.len(), b.len)));
        }
        if !data.is_empty() {
            self.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Overwrites the front of an index buffer.
    pub fn write_u32(&self, b: &GpuIdx, data: &[u32]) -> Result<()> {
        if data.len() > b.len {
            return Err(Error::Internal(format!("gpu: {} indices into a buffer of {}", data.len(), b.len)));
        }
        if !data.is_empty() {
            self.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// The split-k scratch buffer with room for `len` values (grown when needed), `None` over the binding limit.
    pub(super) fn scratch(&self, len: usize) -> Option<wgpu::Buffer> {
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
}
