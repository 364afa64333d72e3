//! `[eval]`'s side files and the document evaluation of a text job.

use std::path::Path;

use super::check_input::format_of;
use super::config::{Config, EvalConfig, Layout};
use super::facts::Facts;
use super::problems::Problems;
use crate::data::input::{LabelsFile, SideFile};

/// The document evaluation of a text job: every document vector the job makes (bag-of-words rows, PCA
/// projections, contextual vectors), its cosine neighbours and, with labels, how well they predict the category.
#[derive(Debug, Clone)]
pub struct DocEvalPlan {
    /// Neighbours per document (`eval.neighbors`).
    pub neighbors: usize,
    /// Row id → category (`item` holds the row-id column).
    pub labels: Option<LabelsFile>,
}

/// A side file under `key`: an existing CSV or Parquet file.
pub(super) fn side_file(key: &str, path: &Path, facts: &Facts, problems: &mut Problems) -> Option<SideFile> {
    match (facts.is_file(path), format_of(path)) {
        (true, Some(format)) => Some(SideFile { path: path.to_owned(), format }),
        (false, _) => {
            problems.add(key, format!("file not found: {}", path.display()));
            None
        }
        (true, None) => {
            problems.add(key, format!("cannot tell the format of {} (use .csv or .parquet)", path.display()));
            None
        }
    }
}

/// `eval.labels`: an existing CSV or Parquet file with a `key` column (items, or documents' row ids) and
/// `eval.labels_category`.
pub(super) fn plan_labels(
    eval: &EvalConfig,
    base: &Path,
    key: &str,
    facts: &Facts,
    problems: &mut Problems,
) -> Option<LabelsFile> {
    let Some(p) = &eval.labels else {
        if eval.labels_item.is_some() || eval.labels_row.is_some() || eval.labels_category.is_some() {
            problems.add("eval.labels", "labels_item / labels_row / labels_category need eval.labels");
        }
        return None;
    };
    let path = base.join(p);
    let format = format_of(&path);
    if !facts.is_file(&path) {
        problems.add("eval.labels", format!("file not found: {}", path.display()));
    } else if format.is_none() {
        problems.add("eval.labels", format!("cannot tell the format of {} (use .csv or .parquet)", path.display()));
    }
    format.map(|format| LabelsFile {
        path,
        format,
        item: key.to_owned(),
        category: eval.labels_category.clone().unwrap_or_else(|| "category".into()),
    })
}

/// `[eval]` in a text job: the document evaluation, its labels keyed by `eval.labels_row` (default: the input's id
/// column name, else "id").
pub(super) fn plan_documents(
    config: &Config,
    base: &Path,
    facts: &Facts,
    problems: &mut Problems,
) -> Option<DocEvalPlan> {
    let eval = config.eval.as_ref()?;
    if config.input.layout != Layout::Text || config.model.is_some() {
        return None;
    }
    if eval.neighbors == 0 || eval.neighbors > 1000 {
        problems.add("eval.neighbors", "must be between 1 and 1000");
    }
    let key = eval.labels_row.clone().or_else(|| config.input.id.clone()).unwrap_or_else(|| "id".into());
    let labels = plan_labels(eval, base, &key, facts, problems);
    Some(DocEvalPlan { neighbors: eval.neighbors as usize, labels })
}

/// `eval.senses`: an existing CSV or Parquet file, and a `[contextual]` stage to evaluate.
pub(super) fn plan_senses(config: &Config, base: &Path, facts: &Facts, problems: &mut Problems) -> Option<SideFile> {
    let p = config.eval.as_ref()?.senses.as_ref()?;
    if config.contextual.is_none() {
        problems.add("eval.senses", "the sense evaluation needs a [contextual] section");
        return None;
    }
    side_file("eval.senses", &base.join(p), facts, problems)
}
