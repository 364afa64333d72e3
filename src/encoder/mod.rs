//! Contextual embeddings: pretrained Transformer encoders (BERT family) from a Hugging Face model folder, run on a
//! [`crate::backend::Backend`] (WGSL kernels on wgpu, their CPU twins on the CPU).
//!
//! * `folder.rs`: the model folder (config.json, sentence-transformers' modules) and its defaults;
//! * `weights.rs`: model.safetensors, each tensor checked for its shape, f16 / bf16 converted;
//! * `tokenize.rs`: tokenizer.json through Hugging Face's `tokenizers`;
//! * `bert.rs`: the encoder itself.

mod bert;
mod folder;
mod tokenize;
mod weights;

pub use bert::Encoder;
pub use folder::{Architecture, EncoderConfig, ModelFolder};
pub use tokenize::{TextTokenizer, Tokens, Word};
pub use weights::WeightsFile;
