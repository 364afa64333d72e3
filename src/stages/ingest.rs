//! Ingest: the input file's fingerprint and its contents as a [`Dataset`].

use super::{Artifacts, Context, StageOutput};
use crate::data;
use crate::data::dataset::Dataset;
use crate::data::fingerprint;
use crate::error::Result;
use crate::runtime::metrics::Metrics;

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let input = &ctx.plan.input;
    let (fingerprints, dataset) = match ctx.shards {
        // The merge: the shards fingerprinted and read their files.
        Some(set) => (set.fingerprints(), set.corpus()?),
        None => (
            input.files.iter().map(|f| fingerprint::fingerprint(f)).collect::<Result<Vec<_>>>()?,
            data::read_input(input)?,
        ),
    };
    let summary = match &dataset {
        Dataset::Interactions(i) => format!(
            "{} users, {} items, {} interactions",
            i.users.len(),
            i.items.len(),
            i.lists.iter().map(Vec::len).sum::<usize>()
        ),
        Dataset::Text(t) => format!("{} documents", t.texts.len()),
        Dataset::Numeric(n) => format!("{} rows × {} columns", n.rows, n.columns.len()),
    };
    metrics.push("ingest", "rows", dataset.rows() as f64);
    if let Dataset::Interactions(i) = &dataset {
        metrics.push("ingest", "items", i.items.len() as f64);
        metrics.push("ingest", "interactions", i.lists.iter().map(Vec::len).sum::<usize>() as f64);
    }
    artifacts.dataset = Some(dataset);
    metrics.push("ingest", "files", fingerprints.len() as f64);
    let mut summary = if input.is_many() { format!("{summary} from {} files", fingerprints.len()) } else { summary };
    if let Some(set) = ctx.shards {
        summary.push_str(&format!(" in {} shards", set.parts()));
    }
    artifacts.fingerprints = fingerprints;
    Ok(StageOutput { summary, ..StageOutput::default() })
}
