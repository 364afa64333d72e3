//! [`TensorStore`] on the CPU: host vectors behind read-write locks.

use std::sync::RwLock;

use super::{r, w, U};
use crate::backend::ops::*;
use crate::backend::{check_distinct, BackendKind, Indices, Tensor};
use crate::error::{Error, Result};

impl TensorStore for super::Cpu {
    fn tensor(&self, data: &[f32]) -> Result<Tensor> {
        Ok(Tensor::new(data.len(), RwLock::new(data.to_vec())))
    }

    fn write(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        let mut v = w(t)?;
        if v.len() < data.len() {
            return Err(Error::Internal(format!("cpu backend: write of {} values into {}", data.len(), v.len())));
        }
        v[..data.len()].copy_from_slice(data);
        Ok(())
    }

    fn read(&self, t: &Tensor) -> Result<Vec<f32>> {
        Ok(r(t)?.clone())
    }

    fn index_buffer(&self, capacity: usize) -> Result<Indices> {
        Ok(Indices::new(capacity, RwLock::new(vec![0u32; capacity])))
    }

    fn write_indices(&self, t: &mut Indices, data: &[u32]) -> Result<()> {
        {
            let mut v = t
                .storage::<U>("cpu")?
                .write()
                .map_err(|_| Error::Internal("cpu backend: an index buffer poisoned by a panic".into()))?;
            if data.len() > v.len() {
                return Err(Error::Internal(format!(
                    "cpu backend: {} indices into a buffer of {}",
                    data.len(),
                    v.len()
                )));
            }
            v[..data.len()].copy_from_slice(data);
        }
        t.set_len(data.len());
        Ok(())
    }

    fn copy(&self, src: &Tensor, src_offset: usize, dst: &Tensor, dst_offset: usize, len: usize) -> Result<()> {
        check_distinct(BackendKind::Cpu, &[dst], &[src])?;
        let from = r(src)?;
        let mut out = w(dst)?;
        let from =
            from.get(src_offset..src_offset + len).ok_or_else(|| Error::Internal("copy: source range".into()))?;
        out.get_mut(dst_offset..dst_offset + len)
            .ok_or_else(|| Error::Internal("copy: destination range".into()))?
            .copy_from_slice(from);
        Ok(())
    }
}
