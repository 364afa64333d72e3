//! Device buffers: f32 values ([`GpuBuf`]) and u32 indices ([`GpuIdx`]), uploads and read-backs, and the split-k
//! scratch buffer. A buffer is freed when its last handle is dropped.

use std::sync::mpsc;

use wgpu::util::DeviceExt;

use super::GpuContext;
use crate::error::{Error, Result};

/// A read-back under way: the staging buffer, the submission that fills it and the mapping's answer.
pub(super) struct Download {
    staging: wgpu::Buffer,
    submitted: wgpu::SubmissionIndex,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
    /// 4-byte words copied.
    words: usize,
    /// Values wanted (halfs when `half`).
    values: usize,
    half: bool,
}

/// An f32 buffer on the device. Its fields are private: its length is what the host checks shapes against before
/// dispatching a kernel that runs without bounds checks (the GEMMs), so only this file sets it, from the buffer it
/// allocates.
#[derive(Clone)]
pub(super) struct GpuBuf {
    buf: wgpu::Buffer,
    len: usize,
    /// Whether the values are halfs (2 bytes each, the buffer padded to 4).
    half: bool,
}

/// A u32 buffer on the device, and how many of its values are in use (at most its capacity).
#[derive(Clone)]
pub(super) struct GpuIdx {
    buf: wgpu::Buffer,
    len: usize,
    capacity: usize,
}

impl GpuBuf {
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    /// Values it holds.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether the values are halfs.
    pub(super) fn is_half(&self) -> bool {
        self.half
    }
}

impl GpuIdx {
    pub(super) fn buffer(&self) -> &wgpu::Buffer {
        &self.buf
    }

    /// The same buffer with `len` values in use (at most its capacity).
    pub(super) fn with_len(&self, len: usize) -> GpuIdx {
        GpuIdx { buf: self.buf.clone(), len: len.min(self.capacity), capacity: self.capacity }
    }
}

impl GpuContext {
    /// A buffer holding `data`.
    pub(super) fn upload(&self, data: &[f32]) -> Result<GpuBuf> {
        self.check_size("tensor", data.len())?;
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(if data.is_empty() { &[0.0f32] } else { data }),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuBuf { buf, len: data.len(), half: false })
    }

    /// A buffer holding `data` rounded to f16 (round to nearest even), padded to a whole number of 4-byte words.
    pub(super) fn upload_f16(&self, data: &[f32]) -> Result<GpuBuf> {
        // Half the bytes of f32 values: the binding limit is checked on half the count, rounded up.
        self.check_size("f16 tensor", data.len().div_ceil(2))?;
        let mut halves: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        halves.resize(data.len().div_ceil(2).max(1) * 2, half::f16::ZERO);
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(&halves),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuBuf { buf, len: data.len(), half: true })
    }

    /// A buffer of `len` zeros (wgpu clears new buffers), its size checked first: no host copy.
    pub(super) fn zeros(&self, len: usize) -> Result<GpuBuf> {
        self.check_size("tensor", len)?;
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (len.max(1) * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(GpuBuf { buf, len, half: false })
    }

    /// An index buffer holding `data`.
    pub(super) fn upload_idx(&self, data: &[u32]) -> Result<GpuIdx> {
        self.check_size("index buffer", data.len())?;
        let buf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: bytemuck::cast_slice(if data.is_empty() { &[0u32] } else { data }),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(GpuIdx { buf, len: data.len(), capacity: data.len() })
    }

    /// Refuses a buffer over the adapter's storage-binding limit, naming the tensor and the limit.
    pub(super) fn check_size(&self, what: &str, len: usize) -> Result<()> {
        check_binding_size(what, len, self.binding_limit())
    }

    /// The largest buffer a kernel can bind, in bytes.
    pub(super) fn binding_limit(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Copies a buffer back to the host (waits for the queue).
    pub(super) fn download(&self, b: &GpuBuf) -> Result<Vec<f32>> {
        self.finish_download(self.start_download(b, b.len)?)
    }

    /// Starts copying the first `len` values of `b` back: the copy is submitted and the staging buffer's mapping
    /// asked for; [`Self::finish_download`] waits for that submission only, so work submitted since keeps running.
    pub(super) fn start_download(&self, b: &GpuBuf, len: usize) -> Result<Download> {
        if len > b.len {
            return Err(Error::Internal(format!("gpu: a read of {len} values from a buffer of {}", b.len)));
        }
        let words = if b.half { len.div_ceil(2) } else { len };
        let mut d = self.start_bytes(&b.buf, words)?;
        (d.values, d.half) = (len, b.half);
        Ok(d)
    }

    /// The values of a download started by [`Self::start_download`].
    pub(super) fn finish_download(&self, d: Download) -> Result<Vec<f32>> {
        let (values, half) = (d.values, d.half);
        let bytes = self.finish_bytes(d)?;
        if half {
            let halves: &[half::f16] = bytemuck::cast_slice(&bytes);
            return Ok(halves[..values].iter().map(|h| h.to_f32()).collect());
        }
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes).to_vec())
    }

    /// Copies an index buffer back to the host.
    pub(super) fn download_idx(&self, b: &GpuIdx) -> Result<Vec<u32>> {
        let d = self.start_bytes(&b.buf, b.len)?;
        Ok(bytemuck::cast_slice::<u8, u32>(&self.finish_bytes(d)?).to_vec())
    }

    /// Submits a copy of the first `words` 4-byte values of `buf` into a staging buffer and asks for its mapping.
    fn start_bytes(&self, buf: &wgpu::Buffer, words: usize) -> Result<Download> {
        let size = (words.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, 0, &staging, 0, size);
        let submitted = self.queue.submit([enc.finish()]);
        let (tx, mapped) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        Ok(Download { staging, submitted, mapped, words, values: words, half: false })
    }

    /// Waits for the download's own submission, then copies the mapped bytes out.
    fn finish_bytes(&self, d: Download) -> Result<Vec<u8>> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(d.submitted), timeout: None })
            .map_err(|e| Error::Gpu(format!("waiting for the device: {e}")))?;
        d.mapped
            .recv()
            .map_err(|_| Error::Gpu("readback callback dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a readback buffer: {e}")))?;
        let view = d.staging.get_mapped_range(..).map_err(|e| Error::Gpu(format!("reading back: {e:?}")))?;
        let out = view[..d.words * 4].to_vec();
        drop(view);
        d.staging.unmap();
        Ok(out)
    }

    /// Overwrites the front of a buffer (queued before the next submission's commands).
    pub(super) fn write_f32(&self, b: &GpuBuf, data: &[f32]) -> Result<()> {
        if b.half {
            return Err(Error::Internal("gpu: an f32 write into an f16 tensor".into()));
        }
        if data.len() > b.len {
            return Err(Error::Internal(format!("gpu: write of {} values into {}", data.len(), b.len)));
        }
        if !data.is_empty() {
            self.queue.write_buffer(&b.buf, 0, bytemuck::cast_slice(data));
        }
        Ok(())
    }

    /// Overwrites the front of an index buffer.
    pub(super) fn write_u32(&self, b: &GpuIdx, data: &[u32]) -> Result<()> {
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
            *slot = Some(GpuBuf { buf, len: (bytes / 4) as usize, half: false });
        }
        slot.as_ref().map(|b| b.buf.clone())
    }
}

/// Refuses a tensor of `len` f32 values over `limit` bytes (the adapter's storage-binding limit), naming the tensor
/// and the limit. Checked arithmetic: a length whose bytes overflow is over every limit.
pub(crate) fn check_binding_size(what: &str, len: usize, limit: u64) -> Result<()> {
    let bytes = u64::try_from(len).ok().and_then(|l| l.checked_mul(4));
    if bytes.is_none_or(|b| b > limit) {
        return Err(Error::Gpu(format!(
            "{what} of {len} values ({:.1} MiB) exceeds the adapter's max_storage_buffer_binding_size of {:.1} MiB",
            len as f64 * 4.0 / 1048576.0,
            limit as f64 / 1048576.0
        )));
    }
    Ok(())
}
