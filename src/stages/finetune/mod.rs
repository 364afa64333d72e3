//! Fine-tuning: the starting encoder trained on the job's documents, written as a model folder
//! (`finetuned_model/`) into the run's staging folder, so that it appears only with the run; the contextual stage
//! then encodes with it (`contextual.model = "finetuned"`). With a document evaluation, the starting model's
//! vectors are kept too (`contextual_start`), so the evaluation shows both.
//!
//! * `contrastive.rs`: sentence-transformers' contrastive loss on pairs (from a file, or from `eval.labels`);
//! * `mlm.rs`: BERT's masked language model on the documents themselves;
//! * `common.rs`: the starting model's vectors, the memory plan and the model folder, for both.

mod common;
mod contrastive;
mod mlm;

pub use common::MODEL_DIR;

use super::{Artifacts, Context, StageOutput};
use crate::error::{Error, Result};
use crate::finetune::Objective;
use crate::runtime::metrics::Metrics;

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.finetune.as_ref().ok_or_else(|| Error::Internal("a finetune stage without its plan".into()))?;
    match plan.objective {
        Objective::Contrastive => contrastive::run(ctx, plan, artifacts, metrics),
        Objective::Mlm => mlm::run(ctx, plan, artifacts, metrics),
    }
}
