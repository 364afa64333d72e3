//! The contextual stage of `embjob merge`: the parts' (shards') text vectors become the run's partitioned table
//! `text_embeddings/part-<shard>.parquet` (hard links where the file system allows, else copies), read back only
//! when the document evaluation needs them in memory.

use std::time::Instant;

use super::{Artifacts, Context, DocVectors, MergedInput, StageOutput, TextPart};
use crate::data;
use crate::data::table::ColumnData;
use crate::error::{Error, Result};
use crate::runtime::metrics::Metrics;

/// The folder of the merged text vectors inside the run.
pub const FOLDER: &str = "text_embeddings";

pub fn run(
    ctx: &Context<'_>,
    set: &dyn MergedInput,
    artifacts: &mut Artifacts,
    metrics: &mut Metrics,
) -> Result<StageOutput> {
    let t = Instant::now();
    let folder = ctx.out_dir.join(FOLDER);
    std::fs::create_dir(&folder).map_err(|e| Error::output(&folder, "cannot create", e))?;
    let mut written = Vec::new();
    let keep = ctx.plan.documents.is_some();
    let (mut values, mut dim) = (Vec::new(), 0);
    for TextPart { index: i, path: part, rows: want } in set.text_parts() {
        crate::runtime::interrupt::check()?;
        let name = format!("part-{i:05}.parquet");
        let dest = folder.join(&name);
        if std::fs::hard_link(&part, &dest).is_err() {
            std::fs::copy(&part, &dest).map_err(|e| Error::output(&dest, "cannot copy the shard's text vectors", e))?;
        }
        let rows = if keep {
            data::for_each_slice(&dest, &["vector"], 65_536, |t| {
                if let Some((_, ColumnData::Vectors { dim: d, values: v })) = t.columns.first() {
                    dim = *d;
                    values.extend_from_slice(v);
                }
                Ok(())
            })?
        } else {
            data::row_count(&dest)?
        };
        if rows != want {
            return Err(Error::input(&part, None, format!("{rows} rows, the shard's manifest says {want}")));
        }
        written.push((format!("{FOLDER}/{name}"), rows));
    }
    let documents: usize = written.iter().map(|w| w.1).sum();
    if documents != artifacts.dataset()?.rows() {
        return Err(Error::Internal(format!("{documents} text vectors for {} documents", artifacts.dataset()?.rows())));
    }
    if keep {
        artifacts.doc_vectors.push(DocVectors { method: "contextual", dim, values });
    }
    set.contextual_metrics(metrics);
    let caching = ctx.plan.contextual.as_ref().is_some_and(|c| c.cache.is_ok());
    artifacts.cache_segments = if caching { set.cache_segments() } else { Vec::new() };
    artifacts.cache_store = artifacts.cache_segments.first().map(|s| s.store_dir.clone());
    let summary = format!(
        "{documents} documents' vectors from {} shards in {FOLDER}/ ({} parts; encoded in {:.1} s over all shards)",
        set.parts(),
        written.len(),
        metrics.get("contextual", "seconds").unwrap_or(0.0)
    );
    let seconds = t.elapsed().as_secs_f64();
    ctx.reporter.stage_finished("contextual", &summary, seconds);
    let details = serde_json::json!({ "shards": set.parts(), "parts": written.len() });
    Ok(StageOutput { written, summary, details: Some(details), ..StageOutput::default() })
}
