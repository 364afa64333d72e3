//! The document evaluation of a text job: for every document vector the job made (bag-of-words rows, PCA
//! projections, contextual vectors) each document's cosine neighbours (`doc_neighbors.parquet`) and, with labels
//! (`eval.labels` keyed by `eval.labels_row`), how often the neighbours share the document's category and how
//! accurate a leave-one-out kNN vote is, against chance and the majority class. One run shows which method serves
//! the task.

use std::collections::BTreeMap;

use super::{Artifacts, Context, StageOutput};
use crate::data::dataset::Dataset;
use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};
use crate::eval::doc_eval;
use crate::eval::doc_eval::LabelScores;
use crate::linalg::sparse::Csr;
use crate::runtime::metrics::Metrics;

const STAGE: &str = "eval_documents";

/// One method's vectors: sparse rows or dense n×dim.
enum Vectors<'a> {
    Sparse(&'a Csr),
    Dense { dim: usize, values: &'a [f32] },
}

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan =
        ctx.plan.documents.as_ref().ok_or_else(|| Error::Internal("a document evaluation without its plan".into()))?;
    let Dataset::Text(corpus) = artifacts.dataset()? else {
        return Err(Error::Internal("a document evaluation without documents".into()));
    };
    let n = corpus.ids.len();
    let mut methods: Vec<(&str, Vectors<'_>)> = Vec::new();
    if let Some(bow) = &artifacts.bow {
        methods.push(("bow", Vectors::Sparse(&bow.matrix)));
    }
    for v in &artifacts.doc_vectors {
        methods.push((v.method, Vectors::Dense { dim: v.dim, values: &v.values }));
    }

    let labels = plan.labels.as_ref().map(|lp| doc_labels(lp, &corpus.ids)).transpose()?;

    let k = plan.neighbors.min(n.saturating_sub(1));
    let mut tables = Vec::new();
    let mut parts = Vec::new();
    let mut table = NeighborRows::default();
    for (method, vectors) in &methods {
        let (idx, sim) = neighbors(ctx, vectors, None, k)?;
        table.append(method, &corpus.ids, &idx, &sim, k);
        let mean = sim.iter().map(|&s| s as f64).sum::<f64>() / sim.len().max(1) as f64;
        metrics.push(STAGE, &format!("{method}/mean_neighbor_cosine"), mean);
        if let Some(DocLabels { labelled, ids, .. }) = &labels {
            // Neighbours among the labelled documents only (the same lists when every document is labelled).
            let kl = plan.neighbors.min(labelled.len().saturating_sub(1));
            let lidx = if labelled.len() == n { idx } else { neighbors(ctx, vectors, Some(labelled), kl)?.0 };
            if let Some(s) = doc_eval::label_scores(&lidx, kl, ids) {
                push_scores(metrics, method, kl, &s);
                parts.push((*method, s));
            }
            // The documents fine-tuning held out of its pairs, scored apart (their neighbours among all).
            let held: Vec<usize> = match &artifacts.held_out {
                Some(h) => (0..labelled.len()).filter(|&p| h.binary_search(&labelled[p]).is_ok()).collect(),
                None => Vec::new(),
            };
            if let Some(s) = doc_eval::label_scores_of(&lidx, kl, ids, &held) {
                push_scores(metrics, &format!("held_out/{method}"), kl, &s);
            }
        }
    }
    metrics.push(STAGE, "documents", n as f64);
    metrics.push(STAGE, "neighbors", k as f64);
    let mut summary = format!("{k} neighbours of {n} documents by {}", names_of(&methods));
    if let Some(labels) = &labels {
        summary = label_summary(metrics, labels, &parts, k);
    }
    if !table.method.is_empty() {
        tables.push(("doc_neighbors.parquet", table.into_table()));
    }
    Ok(StageOutput { tables, summary, ..StageOutput::default() })
}

/// The documents' categories: `labelled` lists the documents that have one (input order), `ids` their category
/// (an index into the sorted category names), `counts` each category's size.
struct DocLabels {
    labelled: Vec<usize>,
    ids: Vec<u32>,
    counts: Vec<usize>,
}

/// Reads `eval.labels` by row id; an error naming the column when no value of it is a row id of the input.
fn doc_labels(lp: &crate::data::input::LabelsFile, row_ids: &[String]) -> Result<DocLabels> {
    let by_row = crate::data::read_labels(lp)?;
    let of_doc: Vec<Option<&String>> = row_ids.iter().map(|id| by_row.get(id)).collect();
    if of_doc.iter().all(Option::is_none) {
        return Err(Error::input(
            &lp.path,
            Some(&lp.item),
            format!(
                "no value of column '{}' is a row id of the input (e.g. '{}'); eval.labels_row names the column",
                lp.item,
                row_ids.first().map_or("", String::as_str)
            ),
        ));
    }
    let names: BTreeMap<&String, u32> = of_doc.iter().flatten().map(|c| (*c, 0)).collect();
    let names: BTreeMap<&String, u32> = names.into_keys().zip(0..).collect();
    let labelled: Vec<usize> = (0..row_ids.len()).filter(|&d| of_doc[d].is_some()).collect();
    let ids: Vec<u32> = labelled.iter().filter_map(|&d| of_doc[d].map(|c| names[c])).collect();
    let mut counts = vec![0usize; names.len()];
    for &c in &ids {
        counts[c as usize] += 1;
    }
    Ok(DocLabels { labelled, ids, counts })
}

/// The chance levels as metrics, and the summary line of a labelled evaluation.
fn label_summary(metrics: &mut Metrics, labels: &DocLabels, parts: &[(&str, LabelScores)], k: usize) -> String {
    let (agree, majority) = doc_eval::chance(&labels.counts);
    metrics.push(STAGE, "labelled_documents", labels.labelled.len() as f64);
    metrics.push(STAGE, "categories", labels.counts.len() as f64);
    metrics.push(STAGE, "chance/label_agreement", agree);
    metrics.push(STAGE, "majority/knn_accuracy", majority);
    let list = |f: fn(&LabelScores) -> f64| {
        parts.iter().map(|(m, s)| format!("{m} {:.2}", f(s))).collect::<Vec<_>>().join(", ")
    };
    format!(
        "{} labelled documents in {} categories: label agreement@{k} {} (chance {agree:.2}); kNN accuracy {} (majority {majority:.2})",
        labels.labelled.len(),
        labels.counts.len(),
        list(|s| s.agreement),
        list(|s| s.knn_accuracy),
    )
}

fn names_of(methods: &[(&str, Vectors<'_>)]) -> String {
    methods.iter().map(|(m, _)| *m).collect::<Vec<_>>().join(", ")
}

fn push_scores(metrics: &mut Metrics, method: &str, k: usize, s: &LabelScores) {
    metrics.push(STAGE, &format!("{method}/label_agreement@{k}"), s.agreement);
    metrics.push(STAGE, &format!("{method}/knn_accuracy@{k}"), s.knn_accuracy);
}

/// The k nearest documents of each document (of `subset`, when given, among themselves; indices into it).
fn neighbors(
    ctx: &Context<'_>,
    vectors: &Vectors<'_>,
    subset: Option<&[usize]>,
    k: usize,
) -> Result<(Vec<u32>, Vec<f32>)> {
    match vectors {
        Vectors::Sparse(x) => Ok(match subset {
            None => doc_eval::sparse_cosine_top_k(x, k),
            Some(rows) => doc_eval::sparse_cosine_top_k(&x.select_rows(rows), k),
        }),
        Vectors::Dense { dim, values } => {
            let gathered;
            let (rows, values) = match subset {
                None => (values.len() / dim.max(&1), *values),
                Some(rows) => {
                    gathered =
                        rows.iter().flat_map(|&r| values[r * dim..(r + 1) * dim].iter().copied()).collect::<Vec<_>>();
                    (rows.len(), gathered.as_slice())
                }
            };
            if rows < 2 || k == 0 {
                return Ok((Vec::new(), Vec::new()));
            }
            let t = ctx.backend.tensor(values)?;
            ctx.backend.cosine_top_k(&t, rows, *dim, k)
        }
    }
}

/// Rows of `doc_neighbors.parquet`.
#[derive(Default)]
struct NeighborRows {
    method: Vec<String>,
    row_id: Vec<i64>,
    row: Vec<String>,
    rank: Vec<i32>,
    neighbor_row_id: Vec<i64>,
    neighbor_row: Vec<String>,
    cosine: Vec<f64>,
}

impl NeighborRows {
    fn append(&mut self, method: &str, ids: &[String], idx: &[u32], sim: &[f32], k: usize) {
        for (i, (nb, cos)) in idx.chunks(k.max(1)).zip(sim.chunks(k.max(1))).enumerate() {
            for (r, (&j, &c)) in nb.iter().zip(cos).enumerate() {
                self.method.push(method.to_owned());
                self.row_id.push(i as i64);
                self.row.push(ids[i].clone());
                self.rank.push(r as i32 + 1);
                self.neighbor_row_id.push(j as i64);
                self.neighbor_row.push(ids[j as usize].clone());
                self.cosine.push(c as f64);
            }
        }
    }

    fn into_table(self) -> Table {
        Table::new(vec![
            ("method", ColumnData::Str(self.method)),
            ("row_id", ColumnData::I64(self.row_id)),
            ("row", ColumnData::Str(self.row)),
            ("rank", ColumnData::I32(self.rank)),
            ("neighbor_row_id", ColumnData::I64(self.neighbor_row_id)),
            ("neighbor_row", ColumnData::Str(self.neighbor_row)),
            ("cosine", ColumnData::F64(self.cosine)),
        ])
    }
}
