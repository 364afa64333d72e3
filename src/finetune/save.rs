//! The fine-tuned model as a folder that `transformers.AutoModel.from_pretrained` and
//! `sentence_transformers.SentenceTransformer` load as they are: `model.safetensors` (the trained tensors, and every
//! other tensor of the starting checkpoint as it was, named as a base model names them; with a masked-LM head, as
//! `BertForMaskedLM` saves them: the encoder under "bert.", the head's `cls.*` beside it), the starting folder's
//! other files (config.json, the tokenizer files, sentence-transformers' modules) copied, and sentence-transformers'
//! module files written when the starting folder had none. Weights in other formats (PyTorch .bin, ONNX,
//! OpenVINO, TensorFlow, Flax) would be stale and are not copied.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::weights::NamedTensor;
use crate::backend::PoolMode;
use crate::error::{Error, Result};

/// Files and folders of a model folder that hold weights in other formats.
const STALE: &[&str] = &[
    "model.safetensors",
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "rust_model.ot",
    "model.onnx",
    "onnx",
    "openvino",
];

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::output(path, "write the fine-tuned model", e)
}

/// How the written folder pools and normalises (for sentence-transformers' module files, when the starting folder
/// has none).
#[derive(Debug, Clone, Copy)]
pub struct SentenceModules {
    pub pooling: PoolMode,
    pub normalize: bool,
    pub max_seq_length: usize,
    pub dim: usize,
}

/// Writes the folder `dir` (which must not exist) from the starting folder `start` and the trained tensors.
pub fn write_model_folder(
    dir: &Path,
    start: &Path,
    trained: &[NamedTensor],
    modules: SentenceModules,
    provenance: &serde_json::Value,
) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| io(dir, e))?;
    copy_dir(start, dir)?;
    let weights = start.join("model.safetensors");
    let bytes = std::fs::read(&weights).map_err(|e| Error::input(&weights, None, format!("cannot read: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::input(&weights, None, format!("not a safetensors file: {e}")))?;
    let prefix = ["", "bert.", "roberta.", "model."]
        .into_iter()
        .find(|p| st.names().iter().any(|n| **n == format!("{p}embeddings.word_embeddings.weight")))
        .unwrap_or("");
    let trained_bytes: HashMap<&str, (&[usize], Vec<u8>)> = trained
        .iter()
        .map(|(n, shape, v)| (n.as_str(), (shape.as_slice(), bytemuck::cast_slice::<f32, u8>(v).to_vec())))
        .collect();
    // With a trained masked-LM head, the folder is written as BertForMaskedLM saves it: the encoder under
    // "bert.", the head at the root; without, as a base model.
    let head = |n: &str| n.starts_with("cls.");
    let out_prefix = if trained.iter().any(|(n, _, _)| head(n)) { "bert." } else { "" };
    let out_name = |base: &str| if head(base) { base.to_owned() } else { format!("{out_prefix}{base}") };
    let mut views: Vec<(String, TensorView<'_>)> = Vec::new();
    for (name, (shape, data)) in &trained_bytes {
        let view = TensorView::new(Dtype::F32, shape.to_vec(), data).map_err(|e| Error::Internal(e.to_string()))?;
        views.push((out_name(name), view));
    }
    for (name, view) in st.tensors() {
        let base = match name.strip_prefix(prefix) {
            Some(base) => base,
            None if out_prefix == "bert." && head(&name) => name.as_str(),
            None => continue,
        };
        if !trained_bytes.contains_key(base) {
            views.push((out_name(base), view));
        }
    }
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut meta = HashMap::new();
    meta.insert("format".to_owned(), "pt".to_owned());
    let out = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Internal(e.to_string()))?;
    let path = dir.join("model.safetensors");
    std::fs::write(&path, out).map_err(|e| io(&path, e))?;
    if !start.join("modules.json").is_file() {
        write_modules(dir, modules)?;
    }
    let path = dir.join("embjob_finetune.json");
    let text = serde_json::to_string_pretty(provenance).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| io(&path, e))
}

/// Copies `from`'s files and folders into `to`, but for weights in any format.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let name = entry.file_name();
        if STALE.iter().any(|s| name == *s) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if src.is_dir() {
            std::fs::create_dir(&dst).map_err(|e| io(&dst, e))?;
            copy_dir(&src, &dst)?;
        } else if src.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| io(&dst, e))?;
        }
    }
    Ok(())
}

/// sentence-transformers' module files: Transformer, Pooling and (when normalising) Normalize.
fn write_modules(dir: &Path, m: SentenceModules) -> Result<()> {
    let mut modules = vec![
        serde_json::json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        serde_json::json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if m.normalize {
        modules.push(
            serde_json::json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}),
        );
        let d = dir.join("2_Normalize");
        std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
    }
    let pooling = serde_json::json!({
        "word_embedding_dimension": m.dim,
        "pooling_mode_cls_token": m.pooling == PoolMode::Cls,
        "pooling_mode_mean_tokens": m.pooling == PoolMode::Mean,
        "pooling_mode_max_tokens": m.pooling == PoolMode::Max,
        "pooling_mode_mean_sqrt_len_tokens": false,
    });
    let bert = serde_json::json!({"max_seq_length": m.max_seq_length, "do_lower_case": false});
    let pooling_dir = dir.join("1_Pooling");
    std::fs::create_dir_all(&pooling_dir).map_err(|e| io(&pooling_dir, e))?;
    for (path, value) in [
        (dir.join("modules.json"), serde_json::Value::Array(modules)),
        (pooling_dir.join("config.json"), pooling),
        (dir.join("sentence_bert_config.json"), bert),
    ] {
        let text = serde_json::to_string_pretty(&value).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| io(&path, e))?;
    }
    Ok(())
}
