//! Contextual embeddings: pretrained Transformer encoders (BERT family) from a Hugging Face model folder, run on a
//! [`crate::backend::Backend`] (WGSL kernels on wgpu, their CPU twins on the CPU).
//!
//! * `folder.rs`: the model folder (config.json, sentence-transformers' modules) and its defaults;
//! * `weights.rs`: model.safetensors, each tensor checked for its shape, f16 / bf16 converted;
//! * `tokenize.rs`: tokenizer.json through Hugging Face's `tokenizers`;
//! * `bert.rs`: the encoder itself.

mod bert;
mod folder;
mod params;
mod tokenize;
mod weights;

pub use bert::{Encoder, PendingVectors};
pub use folder::{Architecture, EncoderConfig, ModelFolder};
pub use params::{EncodeParams, Precision, PrecisionChoice, WordsParams};
pub use tokenize::{TextTokenizer, Tokens, Word};
pub use weights::WeightsFile;

use crate::runtime::memory::{item, Item};

/// An encoding run's allocations: the encoder's weights, its activations at the batch budget (attention
/// scores live in workgroup memory, one query row at a time: no seq × seq buffer), and the document vectors.
pub fn memory_plan(
    weights: u64,
    activations: u64,
    documents: usize,
    dim: usize,
    device: crate::backend::BackendKind,
) -> Vec<Item> {
    vec![
        Item { what: format!("encoder weights on {device}"), bytes: weights },
        Item { what: format!("activations at the batch budget on {device}"), bytes: activations },
        item(
            format!("vectors of one window of up to {documents} documents × {dim} × 4 B"),
            (documents * dim) as u64,
            4,
        ),
    ]
}

/// `contextual.precision` against the backend: the precision the encoder's dense layers use and why. `f16` on a
/// backend without f16 products is an error naming the key and the backend (exit 4).
pub fn resolve_precision(
    choice: PrecisionChoice,
    be: &dyn crate::backend::Backend,
) -> crate::error::Result<(Precision, String)> {
    use crate::backend::F16Support;
    let support = be.f16_support()?;
    Ok(match (choice, support) {
        (PrecisionChoice::F32, _) => (Precision::F32, "contextual.precision = \"f32\"".into()),
        (PrecisionChoice::Auto, F16Support::TensorCores(on)) => (Precision::F16, format!("auto: tensor cores on {on}")),
        (PrecisionChoice::Auto, F16Support::Kernels(why) | F16Support::None(why)) => {
            (Precision::F32, format!("auto: f32, as {why}"))
        }
        (PrecisionChoice::F16, F16Support::TensorCores(on)) => (Precision::F16, format!("asked; tensor cores on {on}")),
        (PrecisionChoice::F16, F16Support::Kernels(why)) => {
            (Precision::F16, format!("asked; f16 kernels without tensor cores, as {why}"))
        }
        (PrecisionChoice::F16, F16Support::None(why)) => {
            return Err(crate::error::Error::Gpu(format!("contextual.precision = \"f16\" cannot run here: {why}")))
        }
    })
}
