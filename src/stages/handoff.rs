//! After the tables are written: every embedding table of the run also as word2vec text and TensorBoard projector
//! files (see [`crate::data::vector_files`]), read back from the staging folder.
//!
//! | Parquet file | hand-off name | key | metadata |
//! |---|---|---|---|
//! | embeddings.parquet | items | item | item, frequency, category (eval.labels) |
//! | pca_components.parquet | pca_loadings | token / feature | token / feature, category (items' eval.labels) |
//! | pca_projections.parquet | pca_projections | row | row, category (documents' eval.labels) |
//! | text_embeddings.parquet | documents | row | row, category (documents' eval.labels) |
//! | token_embeddings.parquet | tokens_layer\<l\>, tokens_static | word\|row\|position | word, row, position |

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::data;
use crate::data::table::ColumnData;
use crate::data::vector_files::{self, cell, column, Written, PROJECTOR_MAX_POINTS};
use crate::error::{Error, Result};
use crate::plan::Plan;

const SLICE: usize = 16_384;

/// Writes the hand-off files of every embedding table found in `root` (the staging folder); returns what was
/// written and notices (samples).
pub fn write(plan: &Plan, root: &Path) -> Result<(Vec<Written>, Vec<String>)> {
    let (item_files, doc_files) = plan.label_files();
    let (item_labels, doc_labels) =
        (item_files.map(data::read_labels).transpose()?, doc_files.map(data::read_labels).transpose()?);
    let mut written = Vec::new();
    let rows = |stem: &str, name: &str, key: &str, meta: &[&str], labels: Option<&HashMap<String, String>>| {
        if let Some(path) = data::find_table(root, stem) {
            rows_file(root, &path, name, key, meta, labels).map(Some)
        } else {
            Ok(None)
        }
    };
    written.extend(rows("embeddings", "items", "item", &["item", "frequency"], item_labels.as_ref())?);
    let loadings = root.join("pca_components.parquet");
    if loadings.is_file() {
        let kind = if plan.bow.is_some() { "token" } else { "feature" };
        let labels = if plan.model.is_some() { item_labels.as_ref() } else { None };
        written.push(pca_loadings(root, &loadings, kind, labels)?);
    }
    written.extend(rows("pca_projections", "pca_projections", "row", &["row"], doc_labels.as_ref())?);
    written.extend(rows("text_embeddings", "documents", "row", &["row"], doc_labels.as_ref())?);
    let tokens = root.join("token_embeddings.parquet");
    if tokens.is_file() {
        written.extend(token_layers(root, &tokens)?);
    }
    let notices = written
        .iter()
        .filter(|w| w.projector_points < w.vectors)
        .map(|w| {
            format!(
                "projector/{}: {} of {} vectors, a stratified sample (TensorBoard's projector shows at most {})",
                w.name, w.projector_points, w.vectors, PROJECTOR_MAX_POINTS
            )
        })
        .collect();
    if !written.is_empty() {
        vector_files::write_projector_config(root, &written)?;
    }
    Ok((written, notices))
}

/// Stratum ids of `keys` by category (unlabelled rows are a stratum of their own).
fn strata(keys: &[String], labels: Option<&HashMap<String, String>>) -> Vec<u32> {
    let Some(labels) = labels else { return vec![0; keys.len()] };
    stratum_ids(keys.iter().map(|k| labels.get(k).map_or("", String::as_str)))
}

/// Each category's id among the sorted distinct categories.
fn stratum_ids<'a>(categories: impl Iterator<Item = &'a str> + Clone) -> Vec<u32> {
    let distinct: std::collections::BTreeSet<&str> = categories.clone().collect();
    let ids: BTreeMap<&str, u32> = distinct.into_iter().zip(0..).collect();
    categories.map(|c| ids[c]).collect()
}

fn vectors(t: &crate::data::table::Table, file: &Path) -> Result<(usize, Vec<f32>)> {
    match column(t, "vector") {
        Some(ColumnData::Vectors { dim, values }) => Ok((*dim, values.clone())),
        _ => Err(Error::Internal(format!("{}: no vector column", file.display()))),
    }
}

fn text_column(t: &crate::data::table::Table, name: &str, file: &Path) -> Result<Vec<String>> {
    let c = column(t, name).ok_or_else(|| Error::Internal(format!("{}: no column {name}", file.display())))?;
    Ok((0..c.len()).map(|i| cell(c, i)).collect())
}

/// One vector per row: `key` names it, `meta` (and the category, with labels) describe it.
fn rows_file(
    root: &Path,
    file: &Path,
    name: &str,
    key: &str,
    meta: &[&str],
    labels: Option<&HashMap<String, String>>,
) -> Result<Written> {
    // The keys are read ahead only when the projector gets a sample (stratified by their categories).
    let keep = if data::row_count(file)? > PROJECTOR_MAX_POINTS {
        let mut keys = Vec::new();
        data::for_each_slice(file, &[key], SLICE, |t| {
            keys.extend(text_column(t, key, file)?);
            Ok(())
        })?;
        Some(vector_files::projector_sample(&strata(&keys, labels), PROJECTOR_MAX_POINTS))
    } else {
        None
    };
    let mut columns: Vec<&str> = meta.to_vec();
    if labels.is_some() {
        columns.push("category");
    }
    let mut dim = 0;
    let mut writer: Option<vector_files::Writer> = None;
    let mut read: Vec<&str> = meta.to_vec();
    if !read.contains(&key) {
        read.push(key);
    }
    read.push("vector");
    let mut keep = keep;
    data::for_each_slice(file, &read, SLICE, |t| {
        let (d, values) = vectors(t, file)?;
        if writer.is_none() {
            dim = d;
            writer = Some(vector_files::Writer::create(root, name, d, &columns, keep.take())?);
        }
        let w = writer.as_mut().ok_or_else(|| Error::Internal("hand-off writer".into()))?;
        let k = text_column(t, key, file)?;
        let cells: Vec<Vec<String>> = meta.iter().map(|m| text_column(t, m, file)).collect::<Result<_>>()?;
        for i in 0..k.len() {
            let mut row: Vec<&str> = cells.iter().map(|c| c[i].as_str()).collect();
            if let Some(l) = labels {
                row.push(l.get(&k[i]).map_or("", String::as_str));
            }
            w.append(&k[i], &row, &values[i * d..(i + 1) * d])?;
        }
        Ok(())
    })?;
    match writer {
        Some(w) => w.finish(),
        None => vector_files::Writer::create(root, name, dim, &columns, None)?.finish(),
    }
}

/// PCA loadings (long: component, id, name, loading) as one vector of n_components per token or feature.
fn pca_loadings(root: &Path, file: &Path, kind: &str, labels: Option<&HashMap<String, String>>) -> Result<Written> {
    let data::Loadings { names: keys, k, values, .. } = data::read_loadings(file, kind)?;
    let keep = (keys.len() > PROJECTOR_MAX_POINTS)
        .then(|| vector_files::projector_sample(&strata(&keys, labels), PROJECTOR_MAX_POINTS));
    let mut columns = vec![kind];
    if labels.is_some() {
        columns.push("category");
    }
    let mut w = vector_files::Writer::create(root, "pca_loadings", k, &columns, keep)?;
    for (r, key) in keys.iter().enumerate() {
        let mut row = vec![key.as_str()];
        if let Some(l) = labels {
            row.push(l.get(key).map_or("", String::as_str));
        }
        w.append(key, &row, &values[r * k..(r + 1) * k])?;
    }
    w.finish()
}

/// Token vectors, one hand-off embedding per hidden state (and the static control), stratified by word.
fn token_layers(root: &Path, file: &Path) -> Result<Vec<Written>> {
    let layer_name = |l: Option<i64>| l.map_or("tokens_static".to_owned(), |l| format!("tokens_layer{l}"));
    let mut words: BTreeMap<Option<i64>, Vec<String>> = BTreeMap::new();
    data::for_each_slice(file, &["word", "layer"], SLICE, |t| {
        let Some(ColumnData::OptI64(layer)) = column(t, "layer") else {
            return Err(Error::Internal(format!("{}: layer column", file.display())));
        };
        for (w, l) in text_column(t, "word", file)?.into_iter().zip(layer) {
            words.entry(*l).or_default().push(w);
        }
        Ok(())
    })?;
    let mut writers: BTreeMap<Option<i64>, vector_files::Writer> = BTreeMap::new();
    let mut keeps: BTreeMap<Option<i64>, Option<Vec<bool>>> = words
        .iter()
        .map(|(&l, ws)| {
            let keep = (ws.len() > PROJECTOR_MAX_POINTS).then(|| {
                vector_files::projector_sample(&stratum_ids(ws.iter().map(String::as_str)), PROJECTOR_MAX_POINTS)
            });
            (l, keep)
        })
        .collect();
    data::for_each_slice(file, &["row", "word", "position", "layer", "vector"], SLICE, |t| {
        let (d, values) = vectors(t, file)?;
        let Some(ColumnData::OptI64(layer)) = column(t, "layer") else {
            return Err(Error::Internal(format!("{}: layer column", file.display())));
        };
        let (row, word, pos) =
            (text_column(t, "row", file)?, text_column(t, "word", file)?, text_column(t, "position", file)?);
        for i in 0..row.len() {
            let l = layer[i];
            let w = match writers.entry(l) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let keep = keeps.remove(&l).flatten();
                    e.insert(vector_files::Writer::create(root, &layer_name(l), d, &["word", "row", "position"], keep)?)
                }
            };
            let key = format!("{}|{}|{}", word[i], row[i], pos[i]);
            w.append(&key, &[&word[i], &row[i], &pos[i]], &values[i * d..(i + 1) * d])?;
        }
        Ok(())
    })?;
    writers.into_values().map(vector_files::Writer::finish).collect()
}
