//! Bag-of-words: the items of each user (long and list layouts) or the tokens of each document (text layout).

use super::{Artifacts, Context, StageOutput};
use crate::data::dataset::Dataset;
use crate::error::{Error, Result};
use crate::runtime::metrics::Metrics;
use crate::stages::output_tables;
use crate::text::vectorizer;

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.bow.as_ref().ok_or_else(|| Error::Internal("a bow stage without its plan".into()))?;
    let dataset = artifacts.dataset()?;
    let bow = match (ctx.shards, dataset) {
        (Some(set), _) => vectorizer::from_counts(plan, set.doc_counts()?)?,
        (None, dataset) => match dataset {
            Dataset::Interactions(i) => vectorizer::from_token_ids(plan, i.items.clone(), &i.lists)?,
            Dataset::Text(t) => vectorizer::from_texts(plan, &t.texts)?,
            Dataset::Numeric(_) => return Err(Error::Internal("a bow stage was planned for numeric input".into())),
        },
    };
    let s = bow.stats;
    metrics.push("bow", "documents", s.documents as f64);
    metrics.push("bow", "vocabulary_size", bow.tokens.len() as f64);
    metrics.push("bow", "nnz", bow.matrix.nnz() as f64);
    metrics.push("bow", "tokens_seen", s.tokens_seen as f64);
    metrics.push("bow", "pruned_by_df", s.pruned_by_df as f64);
    metrics.push("bow", "pruned_by_max_features", s.pruned_by_max_features as f64);
    metrics.push("bow", "stop_words_dropped", s.stop_words_dropped as f64);
    metrics.push("bow", "empty_documents", s.empty_documents as f64);
    let summary = format!(
        "{} documents × {} tokens, {} non-zeros ({} tokens pruned)",
        bow.matrix.rows,
        bow.matrix.cols,
        bow.matrix.nnz(),
        s.pruned_by_df + s.pruned_by_max_features
    );
    let tables = vec![
        ("vocabulary.parquet", output_tables::vocabulary(&bow)),
        ("bow.parquet", output_tables::bow_entries(&bow, dataset.row_ids())),
    ];
    artifacts.bow = Some(bow);
    Ok(StageOutput { tables, summary, ..StageOutput::default() })
}
