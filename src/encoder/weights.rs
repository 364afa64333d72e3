//! The encoder's weights from `model.safetensors` (the `safetensors` crate; f32, f16 and bf16 tensors converted to
//! f32 with `half`), each checked for its shape. A tensor that is missing, has another shape or dtype is an input
//! error naming the file and the tensor.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// The weights file, parsed.
pub struct WeightsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Prefix of every name: "" for a base model, "bert." / "roberta." when saved inside a task model.
    prefix: String,
}

impl WeightsFile {
    /// Reads the file (the tensors are copied to f32 once, so it is read, not mapped: no `unsafe` for a map that
    /// another process could truncate) and finds the base model's prefix.
    pub fn open(path: &Path) -> Result<WeightsFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::input(path, None, format!("cannot read: {e}")))?;
        let prefix = {
            let st = SafeTensors::deserialize(&bytes)
                .map_err(|e| Error::input(path, None, format!("not a safetensors file: {e}")))?;
            let names = st.names();
            ["", "bert.", "roberta.", "model."]
                .into_iter()
                .find(|p| names.iter().any(|n| **n == format!("{p}embeddings.word_embeddings.weight")))
                .ok_or_else(|| Error::input(path, None, "no tensor 'embeddings.word_embeddings.weight'"))?
                .to_owned()
        };
        Ok(WeightsFile { path: path.to_owned(), bytes, prefix })
    }

    /// Tensor `name` (without the prefix) as f32, which must have `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        self.named(&full, shape)?.ok_or_else(|| Error::input(&self.path, None, format!("tensor '{full}': missing")))
    }

    /// Tensor `name` as the file names it (a task head's, beside the base model: `cls.predictions.bias`), or
    /// `None` when the file has none.
    pub fn root_tensor(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        self.named(name, shape)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The base model's prefix in this file ("" or "bert." ...).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn named(&self, full: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| Error::input(&self.path, None, format!("not a safetensors file: {e}")))?;
        let bad = |m: String| Error::input(&self.path, None, format!("tensor '{full}': {m}"));
        let Ok(view) = st.tensor(full) else { return Ok(None) };
        if view.shape() != shape {
            return Err(bad(format!("shape {:?}, expected {shape:?}", view.shape())));
        }
        let data = view.data();
        Ok(Some(match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(bad(format!("dtype {other:?} (f32, f16 or bf16 expected)"))),
        }))
    }
}
