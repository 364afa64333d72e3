//! The encoder's weights as trainable parameters: each resident on the backend in f32 with its gradient and AdamW's
//! two moments, named as the Hugging Face checkpoint names it (q, k and v stacked into one parameter, as the
//! encoder multiplies them).

use crate::backend::{Backend, Tensor};
use crate::encoder::{EncoderConfig, WeightsFile};
use crate::error::{Error, Result};

/// A checkpoint tensor: its name, shape and values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// One trainable parameter: its value, gradient and moments, and the checkpoint tensors it holds, in order.
pub struct Param {
    /// (name, shape) of each checkpoint tensor, stacked in this order.
    pub parts: Vec<(String, Vec<usize>)>,
    pub value: Tensor,
    pub grad: Tensor,
    pub m: Tensor,
    pub v: Tensor,
    /// Whether weight decay applies (not to biases and LayerNorm parameters, as `transformers`' Trainer).
    pub decay: bool,
}

impl Param {
    fn new(be: &dyn Backend, parts: Vec<(String, Vec<usize>)>, values: &[f32]) -> Result<Param> {
        let decay = parts.iter().all(|(n, _)| !n.ends_with(".bias") && !n.contains("LayerNorm"));
        Ok(Param {
            parts,
            value: be.tensor(values)?,
            grad: be.zeros(values.len())?,
            m: be.zeros(values.len())?,
            v: be.zeros(values.len())?,
            decay,
        })
    }

    /// Loads checkpoint tensors `names` (each of `shape`), stacked.
    fn load(be: &dyn Backend, w: &WeightsFile, names: &[String], shape: &[usize]) -> Result<Param> {
        let mut values = Vec::new();
        for n in names {
            values.extend(w.tensor(n, shape)?);
        }
        Param::new(be, names.iter().map(|n| (n.clone(), shape.to_vec())).collect(), &values)
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.value.is_empty()
    }
}

/// A LayerNorm's two parameters.
pub struct LnParams {
    pub gamma: Param,
    pub beta: Param,
}

/// One Transformer layer's parameters.
pub struct LayerParams {
    pub qkv_w: Param,
    pub qkv_b: Param,
    pub o_w: Param,
    pub o_b: Param,
    pub ln1: LnParams,
    pub i_w: Param,
    pub i_b: Param,
    pub out_w: Param,
    pub out_b: Param,
    pub ln2: LnParams,
}

/// BERT's masked-LM prediction head (`BertForMaskedLM`'s `cls.predictions`): a dense layer, the model's activation
/// and a LayerNorm, then the decoder, whose weight is the word embeddings (tied) and whose bias is its own.
pub struct MlmHeadParams {
    pub dense_w: Param,
    pub dense_b: Param,
    pub ln: LnParams,
    pub bias: Param,
}

/// The head's checkpoint names.
const HEAD: &str = "cls.predictions";

/// Every trainable parameter of a BERT-family encoder (and the masked-LM head, when training one).
pub struct TrainableWeights {
    pub word: Param,
    pub position: Param,
    pub token_type: Param,
    pub ln: LnParams,
    pub layers: Vec<LayerParams>,
    pub head: Option<MlmHeadParams>,
}

fn ln(be: &dyn Backend, w: &WeightsFile, prefix: &str, h: usize) -> Result<LnParams> {
    Ok(LnParams {
        gamma: Param::load(be, w, &[format!("{prefix}.LayerNorm.weight")], &[h])?,
        beta: Param::load(be, w, &[format!("{prefix}.LayerNorm.bias")], &[h])?,
    })
}

impl TrainableWeights {
    /// Uploads the encoder's weights from a checkpoint, each checked for its shape.
    pub fn load(be: &dyn Backend, c: &EncoderConfig, w: &WeightsFile) -> Result<TrainableWeights> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let one = |name: &str, shape: &[usize]| Param::load(be, w, &[name.to_owned()], shape);
        let mut layers = Vec::with_capacity(c.layers);
        for l in 0..c.layers {
            let p = format!("encoder.layer.{l}");
            let qkv = |what: &str| -> Vec<String> {
                ["query", "key", "value"].iter().map(|part| format!("{p}.attention.self.{part}.{what}")).collect()
            };
            layers.push(LayerParams {
                qkv_w: Param::load(be, w, &qkv("weight"), &[h, h])?,
                qkv_b: Param::load(be, w, &qkv("bias"), &[h])?,
                o_w: one(&format!("{p}.attention.output.dense.weight"), &[h, h])?,
                o_b: one(&format!("{p}.attention.output.dense.bias"), &[h])?,
                ln1: ln(be, w, &format!("{p}.attention.output"), h)?,
                i_w: one(&format!("{p}.intermediate.dense.weight"), &[i, h])?,
                i_b: one(&format!("{p}.intermediate.dense.bias"), &[i])?,
                out_w: one(&format!("{p}.output.dense.weight"), &[h, i])?,
                out_b: one(&format!("{p}.output.dense.bias"), &[h])?,
                ln2: ln(be, w, &format!("{p}.output"), h)?,
            });
        }
        Ok(TrainableWeights {
            word: one("embeddings.word_embeddings.weight", &[c.vocab_size, h])?,
            position: one("embeddings.position_embeddings.weight", &[c.max_position_embeddings, h])?,
            token_type: one("embeddings.token_type_embeddings.weight", &[c.type_vocab_size, h])?,
            ln: ln(be, w, "embeddings", h)?,
            layers,
            head: None,
        })
    }

    /// Adds the masked-LM head: the checkpoint's (`cls.predictions.*`), or, for a folder without one (a
    /// sentence-transformers folder), a fresh head drawn as `transformers` initialises it (dense weight normal with
    /// standard deviation `init_std`, biases 0, LayerNorm 1 and 0), seeded by `seed`. Returns whether it is fresh.
    pub fn add_mlm_head(
        &mut self,
        be: &dyn Backend,
        c: &EncoderConfig,
        w: &WeightsFile,
        seed: u64,
        init_std: f64,
    ) -> Result<bool> {
        let h = c.hidden_size;
        let fresh = w.root_tensor(&format!("{HEAD}.transform.dense.weight"), &[h, h])?.is_none();
        let mut rng = crate::linalg::rng::SplitMix::new(seed ^ 0x6d6c_6d5f_6865_6164);
        let mut param = |n: &str, shape: &[usize], fill: Option<f32>| -> Result<Param> {
            let name = format!("{HEAD}.{n}");
            let len: usize = shape.iter().product();
            let values = if fresh {
                match fill {
                    Some(x) => vec![x; len],
                    None => (0..len).map(|_| (rng.normal() * init_std) as f32).collect(),
                }
            } else {
                w.root_tensor(&name, shape)?.ok_or_else(|| {
                    Error::input(w.path(), None, format!("tensor '{name}' is missing from the masked-LM head"))
                })?
            };
            Param::new(be, vec![(name, shape.to_vec())], &values)
        };
        let head = MlmHeadParams {
            dense_w: param("transform.dense.weight", &[h, h], None)?,
            dense_b: param("transform.dense.bias", &[h], Some(0.0))?,
            ln: LnParams {
                gamma: param("transform.LayerNorm.weight", &[h], Some(1.0))?,
                beta: param("transform.LayerNorm.bias", &[h], Some(0.0))?,
            },
            bias: param("bias", &[c.vocab_size], Some(0.0))?,
        };
        self.head = Some(head);
        Ok(fresh)
    }

    /// Every parameter, embeddings first, then layer by layer.
    pub fn all(&self) -> Vec<&Param> {
        let mut v = vec![&self.word, &self.position, &self.token_type, &self.ln.gamma, &self.ln.beta];
        for l in &self.layers {
            v.extend([
                &l.qkv_w,
                &l.qkv_b,
                &l.o_w,
                &l.o_b,
                &l.ln1.gamma,
                &l.ln1.beta,
                &l.i_w,
                &l.i_b,
                &l.out_w,
                &l.out_b,
                &l.ln2.gamma,
                &l.ln2.beta,
            ]);
        }
        if let Some(hd) = &self.head {
            v.extend([&hd.dense_w, &hd.dense_b, &hd.ln.gamma, &hd.ln.beta, &hd.bias]);
        }
        v
    }

    /// The number of trainable values.
    pub fn values(&self) -> usize {
        self.all().iter().map(|p| p.len()).sum()
    }

    /// Every checkpoint tensor as it stands: (name, shape, values), read back from the backend.
    pub fn export(&self, be: &dyn Backend) -> Result<Vec<NamedTensor>> {
        let mut out = Vec::new();
        for p in self.all() {
            let values = be.read(&p.value)?;
            let mut at = 0;
            for (name, shape) in &p.parts {
                let n: usize = shape.iter().product();
                out.push((name.clone(), shape.clone(), values[at..at + n].to_vec()));
                at += n;
            }
        }
        Ok(out)
    }

    /// Every gradient, named as [`Self::export`] names the values (tests and diagnostics).
    pub fn export_grads(&self, be: &dyn Backend) -> Result<Vec<(String, Vec<f32>)>> {
        let mut out = Vec::new();
        for p in self.all() {
            let values = be.read(&p.grad)?;
            let mut at = 0;
            for (name, shape) in &p.parts {
                let n: usize = shape.iter().product();
                out.push((name.clone(), values[at..at + n].to_vec()));
                at += n;
            }
        }
        Ok(out)
    }
}
