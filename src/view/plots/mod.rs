//! Plots of a run as PNG in `<run>/plots/`, drawn from the run's own outputs after they are written:
//!
//! * `items.png`: the model's item embeddings in 2-D (the first two principal components of the vectors), coloured
//!   by category with `eval.labels`, the most frequent items named;
//! * `pca_loadings.png`: each token's (item's, for user × item jobs) loadings on the first two components, likewise;
//! * `scree.png`: the explained-variance ratio per component and its cumulative sum;
//! * `training.png`: train and held-out loss per epoch, and held-out recall@k per epoch against popularity's;
//! * `documents.png`: a text job's contextual document vectors in 2-D, coloured by the documents' labels;
//! * `senses_<word>_static.png` and `senses_<word>_layer<l>.png`: every occurrence of an evaluated word, the static
//!   control beside its best hidden state (by AUC), coloured by the document's label (e.g. the sense).

mod draw;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::data;
use crate::data::table::ColumnData;
use crate::data::vector_files::{cell, column};
use crate::error::Result;
use crate::linalg::dense::Matrix;
use crate::pca::{self, Components, PcaInput, PcaParams, Solver};
use crate::plan::Plan;
use crate::view::inspect::{read_metrics, MetricMap};

/// Points named in a scatter: the most frequent ones.
const NAMED: usize = 15;

/// Draws every plot the run's outputs allow into `root/plots/`; returns the files, in report order.
pub fn write(plan: &Plan, root: &Path) -> Result<Vec<String>> {
    let dir = root.join("plots");
    std::fs::create_dir_all(&dir).map_err(|e| crate::error::Error::output(&dir, "cannot create", e))?;
    let metrics = read_metrics(&root.join("metrics.parquet"))?;
    let (item_files, doc_files) = plan.label_files();
    let (item_labels, doc_labels) =
        (item_files.map(data::read_labels).transpose()?, doc_files.map(data::read_labels).transpose()?);
    let mut files = Vec::new();
    let mut add = |name: &str, drawn: Result<bool>| -> Result<()> {
        if drawn? {
            files.push(format!("plots/{name}"));
        }
        Ok(())
    };
    add("items.png", items(root, &dir.join("items.png"), item_labels.as_ref()))?;
    let token_labels = if plan.model.is_some() { item_labels.as_ref() } else { None };
    add("pca_loadings.png", loadings(root, &dir.join("pca_loadings.png"), token_labels))?;
    add("scree.png", scree(&metrics, &dir.join("scree.png")))?;
    add("training.png", training(&metrics, &dir.join("training.png")))?;
    add("finetune_loss.png", finetune_loss(&metrics, &dir.join("finetune_loss.png")))?;
    add(
        "documents_start.png",
        documents_of(
            root,
            "text_embeddings_start",
            "starting model's",
            &dir.join("documents_start.png"),
            doc_labels.as_ref(),
        ),
    )?;
    add("documents.png", documents(root, &dir.join("documents.png"), doc_labels.as_ref()))?;
    for name in senses(root, &dir, &metrics, doc_labels.as_ref())? {
        files.push(format!("plots/{name}"));
    }
    Ok(files)
}

/// The first two principal components of n vectors (row-major, `dim` wide); one component gives y = 0, rows that
/// are all alike give the origin.
fn project_2d(values: &[f32], n: usize, dim: usize) -> Result<Vec<(f64, f64)>> {
    let all_alike = (1..n).all(|r| values[r * dim..(r + 1) * dim] == values[..dim]);
    if n < 2 || dim == 0 || all_alike {
        return Ok(vec![(0.0, 0.0); n]);
    }
    let k = dim.min(2).min(n);
    let m = Matrix::from_vec(n, dim, values.iter().map(|&v| v as f64).collect())?;
    let params = PcaParams {
        components: Components::Count(k),
        whiten: false,
        standardize: false,
        solver: Solver::Covariance,
        solver_reason: "plot".into(),
        oversamples: 0,
        power_iterations: 0,
    };
    // A projection that cannot be computed is an error of the run (it names the plot), not a picture of zeros.
    let r = pca::fit(&crate::backend::Cpu::new(), PcaInput::Dense(m), &params, 0)?;
    Ok((0..n)
        .map(|i| {
            let row = r.projections.row(i);
            (row[0], row.get(1).copied().unwrap_or(0.0))
        })
        .collect())
}

/// An error of a plot: which file it was drawing, and why.
fn plot_error(out: &Path, e: crate::error::Error) -> crate::error::Error {
    crate::error::Error::Stage { stage: "plots", message: format!("{}: {e}", out.display()) }
}

/// Group index per key by category (categories sorted; the largest ten get colours, the rest are "other").
fn groups(keys: &[String], labels: Option<&HashMap<String, String>>) -> (Vec<Option<usize>>, Vec<String>) {
    let Some(labels) = labels else { return (vec![Some(0); keys.len()], Vec::new()) };
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for k in keys {
        if let Some(c) = labels.get(k) {
            *count.entry(c).or_default() += 1;
        }
    }
    let mut by_size: Vec<(&str, usize)> = count.into_iter().collect();
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut names: Vec<String> = by_size.iter().take(10).map(|(c, _)| (*c).to_owned()).collect();
    names.sort();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    (keys.iter().map(|k| labels.get(k).and_then(|c| index.get(c.as_str()).copied())).collect(), names)
}

/// Keys, frequencies (when asked), row-major vectors and their width.
type Vectors = (Vec<String>, Vec<f64>, Vec<f32>, usize);

/// Key, frequency and vectors of a table with a vector column.
fn read_vectors(path: &Path, key: &str, freq: Option<&str>) -> Result<Vectors> {
    let (mut keys, mut freqs, mut values, mut dim) = (Vec::new(), Vec::new(), Vec::new(), 0);
    let mut cols = vec![key, "vector"];
    cols.extend(freq);
    data::for_each_slice(path, &cols, 65_536, |t| {
        if let (Some(k), Some(ColumnData::Vectors { dim: d, values: v })) = (column(t, key), column(t, "vector")) {
            keys.extend((0..k.len()).map(|i| cell(k, i)));
            values.extend_from_slice(v);
            dim = *d;
        }
        if let Some(f) = freq.and_then(|f| column(t, f)) {
            freqs.extend((0..f.len()).map(|i| cell(f, i).parse::<f64>().unwrap_or(0.0)));
        }
        Ok(())
    })?;
    Ok((keys, freqs, values, dim))
}

/// The `NAMED` most frequent keys (ties to the earlier row).
fn most_frequent(keys: &[String], freqs: &[f64]) -> Vec<(usize, String)> {
    let mut order: Vec<usize> = (0..keys.len().min(freqs.len())).collect();
    order.sort_by(|&a, &b| freqs[b].total_cmp(&freqs[a]).then(a.cmp(&b)));
    order.into_iter().take(NAMED).map(|i| (i, keys[i].clone())).collect()
}

fn items(root: &Path, out: &Path, labels: Option<&HashMap<String, String>>) -> Result<bool> {
    let path = root.join("embeddings.parquet");
    if !path.is_file() {
        return Ok(false);
    }
    let (keys, freqs, values, dim) = read_vectors(&path, "item", Some("frequency"))?;
    let title = format!("item embeddings ({} items, d = {dim}): first two principal components", keys.len());
    let named = most_frequent(&keys, &freqs);
    vectors_plot(out, &title, (&keys, &values, dim), labels, &named)?;
    Ok(true)
}

/// Vectors (keys, row-major values, width) on their first two principal components, coloured by category.
fn vectors_plot(
    out: &Path,
    title: &str,
    (keys, values, dim): (&[String], &[f32], usize),
    labels: Option<&HashMap<String, String>>,
    named: &[(usize, String)],
) -> Result<()> {
    let (groups, names) = groups(keys, labels);
    pc_scatter(out, title, (values, dim), (&groups, &names), named)
}

/// Row-major vectors (`dim` wide) on their first two principal components: `groups` index `names`, `named` points
/// get their text.
fn pc_scatter(
    out: &Path,
    title: &str,
    (values, dim): (&[f32], usize),
    (groups, names): (&[Option<usize>], &[String]),
    named: &[(usize, String)],
) -> Result<()> {
    let points = project_2d(values, groups.len(), dim).map_err(|e| plot_error(out, e))?;
    draw::scatter(out, &draw::Scatter { title, x_desc: "PC 1", y_desc: "PC 2", points: &points, groups, names, named })
}

fn loadings(root: &Path, out: &Path, labels: Option<&HashMap<String, String>>) -> Result<bool> {
    let path = root.join("pca_components.parquet");
    if !path.is_file() {
        return Ok(false);
    }
    let kind = if root.join("vocabulary.parquet").is_file() { "token" } else { "feature" };
    let l = data::read_loadings(&path, kind)?;
    let at = |r: usize, c: usize| if c < l.k { l.values[r * l.k + c] as f64 } else { 0.0 };
    let points: Vec<(f64, f64)> = (0..l.ids.len()).map(|r| (at(r, 0), at(r, 1))).collect();
    let keys = l.names.clone();
    // Token counts from the vocabulary name the most frequent ones.
    let mut freqs = vec![0.0; keys.len()];
    let vocab = root.join("vocabulary.parquet");
    if vocab.is_file() {
        let index: HashMap<i64, usize> = l.ids.iter().enumerate().map(|(r, &id)| (id, r)).collect();
        data::for_each_slice(&vocab, &["token_id", "count"], 65_536, |t| {
            if let (Some(ColumnData::OptI64(id)), Some(ColumnData::OptI64(c))) =
                (column(t, "token_id"), column(t, "count"))
            {
                for i in 0..id.len() {
                    if let Some(&r) = id[i].and_then(|x| index.get(&x)) {
                        freqs[r] = c[i].unwrap_or(0) as f64;
                    }
                }
            }
            Ok(())
        })?;
    }
    let (groups, names) = groups(&keys, labels);
    let noun = if labels.is_some() || root.join("embeddings.parquet").is_file() { "item" } else { kind };
    let title = format!("PCA loadings of {} {noun}s on the first two components", keys.len());
    draw::scatter(
        out,
        &draw::Scatter {
            title: &title,
            x_desc: "component 1",
            y_desc: "component 2",
            points: &points,
            groups: &groups,
            names: &names,
            named: &most_frequent(&keys, &freqs),
        },
    )?;
    Ok(true)
}

/// Indexed values of one metric, by index.
fn series(m: &MetricMap, stage: &str, metric: &str) -> Vec<(f64, f64)> {
    m.iter()
        .filter(|((s, n, i), _)| s == stage && n == metric && i.is_some())
        .map(|((_, _, i), v)| (i.unwrap_or(0) as f64, *v))
        .collect()
}

fn scree(m: &MetricMap, out: &Path) -> Result<bool> {
    let ratios: Vec<f64> = series(m, "pca", "explained_variance_ratio").into_iter().map(|p| p.1).collect();
    if ratios.is_empty() {
        return Ok(false);
    }
    let total: f64 = ratios.iter().sum();
    draw::scree(
        out,
        &format!("PCA: {} components explain {:.1} % of the variance", ratios.len(), total * 100.0),
        &ratios,
    )?;
    Ok(true)
}

fn training(m: &MetricMap, out: &Path) -> Result<bool> {
    let loss = series(m, "train", "loss");
    if loss.is_empty() {
        return Ok(false);
    }
    let heldout = series(m, "train", "heldout_loss");
    let mut panels = vec![(
        "cross-entropy per example".to_owned(),
        "loss".to_owned(),
        vec![("train".to_owned(), loss), ("held-out (LOO)".to_owned(), heldout)],
    )];
    // The smallest k with a per-epoch recall, and popularity's recall at the same k as a flat line.
    let recall_metric = m
        .keys()
        .filter(|(s, n, i)| s == "train" && n.starts_with("loo_recall@") && i.is_some())
        .map(|(_, n, _)| n.clone())
        .min_by_key(|n| n.trim_start_matches("loo_recall@").parse::<usize>().unwrap_or(usize::MAX));
    if let Some(metric) = recall_metric {
        let recall = series(m, "train", &metric);
        let mut lines = vec![("model".to_owned(), recall.clone())];
        if let Some(p) = m.get(&("eval_popularity".to_owned(), metric.clone(), None)) {
            let (first, last) = (recall.first().map_or(1.0, |r| r.0), recall.last().map_or(1.0, |r| r.0));
            lines.push(("popularity".to_owned(), vec![(first, *p), (last, *p)]));
        }
        let k = metric.trim_start_matches("loo_recall@");
        panels.push((format!("held-out recall@{k} (LOO)"), format!("recall@{k}"), lines));
    }
    draw::curves(out, "training", &panels)?;
    Ok(true)
}

fn documents(root: &Path, out: &Path, labels: Option<&HashMap<String, String>>) -> Result<bool> {
    let tuned = root.join("finetuned_model").is_dir();
    documents_of(root, "text_embeddings", if tuned { "fine-tuned model's" } else { "" }, out, labels)
}

/// The fine-tuning loss per step, and its running mean over a tenth of the steps.
fn finetune_loss(m: &MetricMap, out: &Path) -> Result<bool> {
    let loss = series(m, "finetune", "loss");
    if loss.is_empty() {
        return Ok(false);
    }
    let w = (loss.len() / 10).max(1);
    let mean: Vec<(f64, f64)> =
        (w..=loss.len()).map(|e| (loss[e - 1].0, loss[e - w..e].iter().map(|p| p.1).sum::<f64>() / w as f64)).collect();
    let lines = vec![("step".to_owned(), loss), (format!("mean of {w}"), mean)];
    let mlm = m.contains_key(&("finetune".to_owned(), "held_out_mlm_loss_start".to_owned(), None));
    let what = if mlm { "masked-LM loss per step" } else { "contrastive loss per step" };
    draw::curves(out, "fine-tuning", &[(what.to_owned(), "loss".to_owned(), lines)])?;
    Ok(true)
}

/// A table of document vectors in 2-D (`which`: whose vectors, for the title).
fn documents_of(
    root: &Path,
    table: &str,
    which: &str,
    out: &Path,
    labels: Option<&HashMap<String, String>>,
) -> Result<bool> {
    let Some(path) = data::find_table(root, table) else {
        return Ok(false);
    };
    let (keys, _, values, dim) = read_vectors(&path, "row", None)?;
    let title = format!(
        "{which}{}contextual document vectors ({} documents, d = {dim}): first two principal components",
        if which.is_empty() { "" } else { " " },
        keys.len()
    );
    vectors_plot(out, &title, (&keys, &values, dim), labels, &[])?;
    Ok(true)
}

/// For each word of the sense evaluation: its occurrences' static vectors and those of its best layer, with the
/// comparison words of `contextual.compare` (encoded alone) beside them when the run wrote them.
fn senses(root: &Path, dir: &Path, m: &MetricMap, labels: Option<&HashMap<String, String>>) -> Result<Vec<String>> {
    let path = root.join("token_embeddings.parquet");
    // (word, best layer by AUC), for the words the sense evaluation scored.
    let mut best: BTreeMap<String, (i64, f64)> = BTreeMap::new();
    for ((s, n, i), v) in m {
        if let (true, Some(word), Some(layer)) = (s == "senses", n.strip_suffix("/auc"), i) {
            if word != "all" && !word.contains('/') {
                let e = best.entry(word.to_owned()).or_insert((*layer, *v));
                if *v > e.1 {
                    *e = (*layer, *v);
                }
            }
        }
    }
    if best.is_empty() || !path.is_file() {
        return Ok(Vec::new());
    }
    let mut found: BTreeMap<(String, Option<i64>), Occurrences> = BTreeMap::new();
    let mut dim = 0;
    data::for_each_slice(&path, &["row", "word", "layer", "vector"], 65_536, |t| {
        if let (Some(row), Some(word), Some(ColumnData::OptI64(layer)), Some(ColumnData::Vectors { dim: d, values })) =
            (column(t, "row"), column(t, "word"), column(t, "layer"), column(t, "vector"))
        {
            dim = *d;
            for i in 0..row.len() {
                let w = cell(word, i);
                let Some((bl, _)) = best.get(&w) else { continue };
                if layer[i].is_none() || layer[i] == Some(*bl) {
                    let e = found.entry((w, layer[i])).or_default();
                    e.0.push(cell(row, i));
                    e.1.extend_from_slice(&values[i * d..(i + 1) * d]);
                }
            }
        }
        Ok(())
    })?;
    let compared = read_compared(root)?;
    let mut files = Vec::new();
    for (word, (layer, auc)) in &best {
        for space in [None, Some(*layer)] {
            let Some(occurrences) = found.get(&(word.clone(), space)) else { continue };
            let alone: Vec<(String, Vec<f32>)> = compared
                .iter()
                .filter(|(of, _, l, _)| of == word && *l == space)
                .map(|(_, w, _, v)| (w.clone(), v.clone()))
                .collect();
            let safe: String = word.chars().map(|c| if c.is_alphanumeric() { c } else { '_' }).collect();
            let name = match space {
                None => format!("senses_{safe}_static.png"),
                Some(l) => format!("senses_{safe}_layer{l}.png"),
            };
            let out = dir.join(&name);
            match space {
                None if !alone.is_empty() => static_picture(&out, word, occurrences.0.len(), &alone, dim)?,
                None => vectors_plot(
                    &out,
                    &format!("\"{word}\": static control ({} occurrences; one vector for all)", occurrences.0.len()),
                    (&occurrences.0, &occurrences.1, dim),
                    labels,
                    &[],
                )?,
                Some(l) => {
                    let title = format!("\"{word}\": hidden state {l}, its best (AUC {auc:.2})");
                    layer_picture(&out, &title, word, occurrences, &alone, labels, dim)?
                }
            }
            files.push(name);
        }
    }
    Ok(files)
}

/// (rows, row-major vectors) of one word's occurrences in one space.
type Occurrences = (Vec<String>, Vec<f32>);

/// One row of `compare_embeddings.parquet`: (compared word, word, hidden state or None for static, vector).
type Compared = (String, String, Option<i64>, Vec<f32>);

/// `compare_embeddings.parquet`'s rows.
fn read_compared(root: &Path) -> Result<Vec<Compared>> {
    let path = root.join("compare_embeddings.parquet");
    let mut rows = Vec::new();
    if !path.is_file() {
        return Ok(rows);
    }
    data::for_each_slice(&path, &["of", "word", "layer", "vector"], 65_536, |t| {
        if let (Some(of), Some(word), Some(ColumnData::OptI64(layer)), Some(ColumnData::Vectors { dim: d, values })) =
            (column(t, "of"), column(t, "word"), column(t, "layer"), column(t, "vector"))
        {
            for i in 0..layer.len() {
                rows.push((cell(of, i), cell(word, i), layer[i], values[i * d..(i + 1) * d].to_vec()));
            }
        }
        Ok(())
    })?;
    Ok(rows)
}

/// The static control beside the comparison words' (`alone`: the word itself first among them): one vector for
/// every occurrence, so the picture is where that one vector lies; the cosines in the title.
fn static_picture(out: &Path, word: &str, occurrences: usize, alone: &[(String, Vec<f32>)], dim: usize) -> Result<()> {
    let own = alone.iter().find(|(w, _)| w == word).map(|(_, v)| v.as_slice());
    let cosines: Vec<String> = alone
        .iter()
        .filter(|(w, _)| w != word)
        .map(|(w, v)| format!("{w} {:.2}", own.map_or(0.0, |o| crate::eval::senses::cosine(o, v))))
        .collect();
    let title = format!("\"{word}\" static ({occurrences} occurrences, one vector); cosine: {}", cosines.join(", "));
    let keys: Vec<String> = alone.iter().map(|(w, _)| w.clone()).collect();
    let values: Vec<f32> = alone.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let groups: Vec<Option<usize>> = keys.iter().map(|k| Some(usize::from(k != word))).collect();
    let names = vec![format!("\"{word}\": every occurrence"), "comparison words".to_owned()];
    let named: Vec<(usize, String)> = keys.iter().cloned().enumerate().collect();
    pc_scatter(out, &title, (&values, dim), (&groups, &names), &named)
}

/// The occurrences at one hidden state coloured by sense, with the comparison words and the word itself encoded
/// alone in the same projection; each sense's legend entry lists its occurrences' mean cosine to each comparison
/// word, nearest first.
fn layer_picture(
    out: &Path,
    title: &str,
    word: &str,
    (rows, values): &Occurrences,
    alone: &[(String, Vec<f32>)],
    labels: Option<&HashMap<String, String>>,
    dim: usize,
) -> Result<()> {
    if alone.is_empty() {
        return vectors_plot(out, title, (rows, values, dim), labels, &[]);
    }
    let (mut groups, mut names) = groups(rows, labels);
    if names.is_empty() {
        names.push(format!("\"{word}\" in context"));
    }
    // Each sense's mean cosine to every comparison word, nearest first.
    for (g, name) in names.iter_mut().enumerate() {
        let members: Vec<&[f32]> =
            (0..rows.len()).filter(|&i| groups[i] == Some(g)).map(|i| &values[i * dim..(i + 1) * dim]).collect();
        let mut near: Vec<(&str, f64)> = alone
            .iter()
            .filter(|(w, _)| w != word && !members.is_empty())
            .map(|(w, v)| {
                let sum = members.iter().map(|m| crate::eval::senses::cosine(m, v)).sum::<f64>();
                (w.as_str(), sum / members.len() as f64)
            })
            .collect();
        near.sort_by(|a, b| b.1.total_cmp(&a.1));
        let listed: Vec<String> = near.iter().map(|(w, c)| format!("{w} {c:.2}")).collect();
        if !listed.is_empty() {
            name.push_str(&format!(": cosine {}", listed.join(", ")));
        }
    }
    let (compared, itself) = (names.len(), names.len() + 1);
    names.push("comparison words, alone".to_owned());
    names.push(format!("\"{word}\" alone"));
    let mut all = values.clone();
    let mut named = Vec::new();
    for (w, v) in alone {
        named.push((groups.len(), w.clone()));
        groups.push(Some(if w == word { itself } else { compared }));
        all.extend_from_slice(v);
    }
    pc_scatter(out, title, (&all, dim), (&groups, &names), &named)
}
