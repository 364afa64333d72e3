//! A Hugging Face model folder: `config.json` (the architecture), `tokenizer.json`, `model.safetensors`, and when
//! present sentence-transformers' `modules.json`, `1_Pooling/config.json`, `sentence_bert_config.json` for the
//! defaults (pooling, normalisation, sequence length). Every problem names the file and the key; exit code 3.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backend::{Activation, PoolMode};
use crate::error::{Error, Result};

/// The architectures embjob runs: BERT-style encoders with absolute positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// BertModel (MiniLM, bge, e5, ...).
    Bert,
    /// RobertaModel / XLMRobertaModel: positions start after the padding index.
    Roberta,
}

/// What `config.json` says about the network.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EncoderConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate_size: usize,
    #[serde(skip)]
    pub activation: Activation,
    pub layer_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    /// Added to a token's index for its position (RoBERTa: pad_token_id + 1).
    pub position_offset: usize,
    /// Training only: `hidden_dropout_prob` (embeddings, attention output, feed-forward output) and
    /// `attention_probs_dropout_prob`; 0.1 each when config.json does not say, as `transformers`' BertConfig.
    pub hidden_dropout: f64,
    pub attention_dropout: f64,
}

impl EncoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.heads
    }

    /// The longest input the position table allows.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_offset)
    }
}

/// A model folder, read and checked.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    pub dir: PathBuf,
    pub config: EncoderConfig,
    /// From sentence-transformers' pooling module, when the folder has one.
    pub pooling: Option<PoolMode>,
    /// Whether sentence-transformers' module list ends in a Normalize module.
    pub normalize: bool,
    /// sentence-transformers' `max_seq_length`, when set.
    pub max_seq_length: Option<usize>,
}

impl ModelFolder {
    pub fn tokenizer_file(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }

    pub fn weights_file(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }

    /// Reads and checks the folder's files (the weights are checked when loaded).
    pub fn open(dir: &Path) -> Result<ModelFolder> {
        if !dir.is_dir() {
            return Err(Error::input(dir, None, "the model folder does not exist (contextual.model)"));
        }
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(f).is_file() {
                return Err(Error::input(dir.join(f), None, "missing from the model folder"));
            }
        }
        let config = encoder_config(&dir.join("config.json"))?;
        let (mut pooling, mut normalize) = (None, false);
        let modules = dir.join("modules.json");
        if modules.is_file() {
            let list = read_json(&modules)?;
            let list = list.as_array().ok_or_else(|| Error::input(&modules, None, "expected a list of modules"))?;
            for m in list {
                let ty = m.get("type").and_then(Value::as_str).unwrap_or_default();
                let path = m.get("path").and_then(Value::as_str).unwrap_or_default();
                if ty.ends_with(".Pooling") {
                    pooling = Some(pooling_mode(&dir.join(path).join("config.json"))?);
                } else if ty.ends_with(".Normalize") {
                    normalize = true;
                } else if !ty.ends_with(".Transformer") {
                    return Err(Error::input(&modules, None, format!("module type '{ty}' is not one embjob runs")));
                }
            }
        }
        let st = dir.join("sentence_bert_config.json");
        let max_seq_length = if st.is_file() {
            let v = read_json(&st)?;
            match v.get("max_seq_length") {
                None | Some(Value::Null) => None,
                Some(x) => Some(positive(&st, "max_seq_length", x)?),
            }
        } else {
            None
        };
        Ok(ModelFolder { dir: dir.to_owned(), config, pooling, normalize, max_seq_length })
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::input(path, None, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| Error::input(path, None, format!("not valid JSON: {e}")))
}

fn positive(file: &Path, key: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .filter(|&x| x > 0)
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| Error::input(file, None, format!("key '{key}': expected a positive integer, found {v}")))
}

fn encoder_config(file: &Path) -> Result<EncoderConfig> {
    let v = read_json(file)?;
    let key = |k: &str| v.get(k).ok_or_else(|| Error::input(file, None, format!("key '{k}' is missing")));
    let int = |k: &str| key(k).and_then(|x| positive(file, k, x));
    let model_type = key("model_type")?.as_str().unwrap_or_default().to_owned();
    let architecture = match model_type.as_str() {
        "bert" => Architecture::Bert,
        "roberta" | "xlm-roberta" | "camembert" => Architecture::Roberta,
        other => {
            return Err(Error::input(
                file,
                None,
                format!("key 'model_type': '{other}' is not an architecture embjob runs (bert, roberta, xlm-roberta)"),
            ))
        }
    };
    if let Some(p) = v.get("position_embedding_type").and_then(Value::as_str) {
        if p != "absolute" {
            return Err(Error::input(file, None, format!("key 'position_embedding_type': '{p}' (only absolute)")));
        }
    }
    if v.get("is_decoder").and_then(Value::as_bool) == Some(true) {
        return Err(Error::input(file, None, "key 'is_decoder': true (embjob runs encoders)"));
    }
    let act = key("hidden_act")?.as_str().unwrap_or_default();
    let activation = match act {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => return Err(Error::input(file, None, format!("key 'hidden_act': '{other}' is not supported"))),
    };
    let (hidden_size, heads) = (int("hidden_size")?, int("num_attention_heads")?);
    if hidden_size % heads != 0 {
        return Err(Error::input(
            file,
            None,
            format!("key 'num_attention_heads': {heads} heads do not divide hidden_size {hidden_size}"),
        ));
    }
    let layer_norm_eps = match v.get("layer_norm_eps") {
        None => 1e-12,
        Some(x) => x.as_f64().filter(|e| *e > 0.0 && e.is_finite()).ok_or_else(|| {
            Error::input(file, None, format!("key 'layer_norm_eps': expected a positive number, found {x}"))
        })?,
    };
    let type_vocab_size = match v.get("type_vocab_size") {
        None => 2,
        Some(x) => positive(file, "type_vocab_size", x)?,
    };
    let position_offset = match architecture {
        Architecture::Bert => 0,
        Architecture::Roberta => {
            let pad = v.get("pad_token_id").and_then(Value::as_u64).unwrap_or(1);
            usize::try_from(pad).unwrap_or(usize::MAX).saturating_add(1)
        }
    };
    let probability = |k: &str| match v.get(k) {
        None => Ok(0.1),
        Some(x) => x.as_f64().filter(|p| (0.0..1.0).contains(p)).ok_or_else(|| {
            Error::input(file, None, format!("key '{k}': expected a probability at least 0 and below 1, found {x}"))
        }),
    };
    let (hidden_dropout, attention_dropout) =
        (probability("hidden_dropout_prob")?, probability("attention_probs_dropout_prob")?);
    Ok(EncoderConfig {
        hidden_dropout,
        attention_dropout,
        architecture,
        vocab_size: int("vocab_size")?,
        hidden_size,
        layers: int("num_hidden_layers")?,
        heads,
        intermediate_size: int("intermediate_size")?,
        activation,
        layer_norm_eps,
        max_position_embeddings: int("max_position_embeddings")?,
        type_vocab_size,
        position_offset,
    })
}

fn pooling_mode(file: &Path) -> Result<PoolMode> {
    let v = read_json(file)?;
    let on = |k: &str| v.get(k).and_then(Value::as_bool) == Some(true);
    let modes: Vec<PoolMode> = [
        ("pooling_mode_mean_tokens", PoolMode::Mean),
        ("pooling_mode_cls_token", PoolMode::Cls),
        ("pooling_mode_max_tokens", PoolMode::Max),
    ]
    .into_iter()
    .filter(|(k, _)| on(k))
    .map(|(_, m)| m)
    .collect();
    for k in ["pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"] {
        if on(k) {
            return Err(Error::input(file, None, format!("key '{k}': this pooling is not one embjob runs")));
        }
    }
    match modes.as_slice() {
        [m] => Ok(*m),
        [] => Err(Error::input(file, None, "no pooling mode is on")),
        _ => Err(Error::input(file, None, "several pooling modes are on (embjob pools one way)")),
    }
}
