//! The encoder of the contextual stage: its weights on the backend, its memory plan stated and checked before any
//! work, and one forward pass per batch.

use super::windows::Window;
use crate::encoder::{
    resolve_precision, EncodeParams, Encoder, EncoderConfig, Precision, Tokens, WeightsFile, WordsParams,
};
use crate::error::Result;
use crate::plan::ContextualPlan;
use crate::runtime::memory::{self, Item};
use crate::stages::Context;

/// The encoder, the encoding parameters, the precision it runs in (and why) and, for the static control, the
/// word-piece embedding table.
pub struct Model<'b> {
    encoder: Encoder<'b>,
    params: EncodeParams,
    precision: (Precision, String),
    static_table: Option<Vec<f32>>,
}

impl<'b> Model<'b> {
    /// Reads the weights, states the memory plan (`documents`: (in a window, in the corpus); with `keep`, every
    /// document's vector is held for the document evaluation) and checks it against `job.max_memory`.
    pub fn open(
        ctx: &Context<'b>,
        plan: &ContextualPlan,
        words: Option<&WordsParams>,
        (window_documents, documents): (usize, usize),
        keep: bool,
    ) -> Result<Model<'b>> {
        let config = plan.folder.config.clone();
        let precision = resolve_precision(plan.encode.precision, ctx.backend)?;
        let weights = WeightsFile::open(&plan.folder.weights_file())?;
        let h = config.hidden_size;
        let e = &plan.encode;
        // A batch holds at most batch_tokens padded tokens, or one document of up to max_tokens.
        let batch_rows = e.batch_tokens.max(e.max_tokens);
        let activations = Encoder::workspace_bytes(&config, batch_rows.next_power_of_two(), e.batch_tokens);
        let weight_bytes = Encoder::weight_bytes(&config, precision.0) as u64;
        let mut mem =
            crate::encoder::memory_plan(weight_bytes, activations as u64, window_documents, h, ctx.report.used);
        let static_table = match words {
            Some(w) if w.static_control => {
                mem.push(Item {
                    what: format!("word-piece embeddings for the static control {} × {h} × 4 B", config.vocab_size),
                    bytes: (config.vocab_size * h * 4) as u64,
                });
                Some(weights.tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?)
            }
            _ => None,
        };
        if keep {
            mem.push(Item {
                what: format!("all {documents} document vectors × {h} × 4 B, kept for the document evaluation"),
                bytes: (documents * h * 4) as u64,
            });
        }
        ctx.reporter.notice(&memory::describe("contextual", &mem));
        memory::check("contextual", &mem, ctx.plan.max_memory)?;
        let encoder = Encoder::new(ctx.backend, config, &weights, precision.0)?;
        Ok(Model { encoder, params: e.clone(), precision, static_table })
    }

    /// The vectors' width.
    pub fn dim(&self) -> usize {
        self.encoder.config.hidden_size
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.encoder.config
    }

    /// The precision the dense layers run in, and why (run.json).
    pub fn precision(&self) -> &(Precision, String) {
        &self.precision
    }

    pub fn batch_tokens(&self) -> usize {
        self.params.batch_tokens
    }

    /// The word-piece embedding rows, when the static control is written.
    pub fn static_table(&self) -> Option<&[f32]> {
        self.static_table.as_deref()
    }

    /// [`Self::encode`] without hidden states, in two halves: started here (recorded, submitted, read-back under
    /// way), taken by [`Self::finish`].
    pub fn start(&mut self, batch: &[usize], window: &Window) -> Result<crate::encoder::PendingVectors> {
        let docs: Vec<Tokens> = batch.iter().map(|&d| window.tokens[d].clone()).collect();
        self.encoder.embed_start(&docs, self.params.pooling, self.params.normalize)
    }

    /// The pooled vectors (batch order) of a batch started by [`Self::start`].
    pub fn finish(&self, pending: crate::encoder::PendingVectors) -> Result<Vec<f32>> {
        self.encoder.embed_finish(pending).map(|(v, _)| v)
    }

    /// One forward pass over the window's documents `batch`: their pooled vectors (batch order), the padded length
    /// and the hidden states `layers` names.
    pub fn encode(
        &mut self,
        batch: &[usize],
        window: &Window,
        layers: &[usize],
    ) -> Result<(Vec<f32>, usize, Vec<Vec<f32>>)> {
        let docs: Vec<Tokens> = batch.iter().map(|&d| window.tokens[d].clone()).collect();
        self.encode_tokens(&docs, layers)
    }

    /// [`Self::encode`] of texts already tokenized.
    pub fn encode_tokens(&mut self, docs: &[Tokens], layers: &[usize]) -> Result<(Vec<f32>, usize, Vec<Vec<f32>>)> {
        self.encoder.embed_keeping(docs, self.params.pooling, self.params.normalize, layers)
    }
}
