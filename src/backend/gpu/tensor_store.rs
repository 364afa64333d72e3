//! [`TensorStore`] on the GPU: resident tensors are device buffers, written and read through the queue (what was
//! recorded is submitted first).

use super::recorder::{buf, Gpu, Resident};
use super::GpuIdx;
use crate::backend::ops::{PendingRead, TensorStore};
use crate::backend::{check_distinct, BackendKind, DType, Indices, Tensor};
use crate::error::{Error, Result};

impl TensorStore for Gpu {
    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        let b = self.ctx().upload(data)?;
        Ok(Tensor::new(data.len(), self.resident(b)))
    }

    fn tensor_f16(&self, data: &[f32]) -> Result<Tensor> {
        if !self.ctx().f16 {
            return Err(Error::Gpu(format!("the adapter '{}' has no f16 shaders", self.adapter().name)));
        }
        let b = self.ctx().upload_f16(data)?;
        Ok(Tensor::typed(data.len(), DType::F16, self.resident(b)))
    }

    fn zeros(&self, len: usize) -> Result<Tensor> {
        let b = self.ctx().zeros(len.max(1))?;
        Ok(Tensor::new(len.max(1), self.resident(b)))
    }

    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.flush()?;
        self.ctx().write_f32(buf(t)?, data)
    }

    fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        self.flush()?;
        self.ctx().download(super::recorder::operand(t)?)
    }

    fn start_read(&self, t: &Tensor, len: usize) -> Result<PendingRead> {
        self.flush()?;
        let download = self.ctx().start_download(super::recorder::operand(t)?, len)?;
        Ok(PendingRead::Device(Box::new(download)))
    }

    fn finish_read(&self, pending: PendingRead) -> Result<Vec<f32>> {
        match pending {
            PendingRead::Done(v) => Ok(v),
            PendingRead::Device(state) => {
                let download = state
                    .downcast::<super::buffers::Download>()
                    .map_err(|_| Error::Internal("a read-back started on another backend".into()))?;
                self.ctx().finish_download(*download)
            }
        }
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        self.ctx().check_size("index buffer", capacity)?;
        let b = self.ctx().upload_idx(&vec![0; capacity.max(1)])?;
        Ok(Indices::new(capacity, self.resident(b)))
    }

    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()> {
        self.flush()?;
        self.ctx().write_u32(&t.storage::<Resident<GpuIdx>>("gpu")?.buf, data)?;
        t.set_len(data.len());
        Ok(())
    }

    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()> {
        check_distinct(BackendKind::Gpu, &[dst], &[src])?;
        let (a, b) = (buf(src)?, buf(dst)?);
        let inside = |offset: usize, have: usize| offset.checked_add(len).is_some_and(|end| end <= have);
        if !inside(src_offset, a.len()) || !inside(dst_offset, b.len()) {
            return Err(Error::Internal("copy: range outside a tensor".into()));
        }
        self.record(|_, enc| {
            if len > 0 {
                let (from, to, bytes) = (src_offset as u64 * 4, dst_offset as u64 * 4, len as u64 * 4);
                enc.copy_buffer_to_buffer(a.buffer(), from, b.buffer(), to, bytes);
            }
            Ok(())
        })
    }
}
