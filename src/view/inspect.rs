//! Looking at a finished run without Python: `embjob show` (stages, key metrics, the model against popularity,
//! files) and `embjob neighbors` (the nearest items or rows of one, by cosine, in any embedding table of the run).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::data;
use crate::data::table::ColumnData;
use crate::data::vector_files::{cell, column};
use crate::error::{Error, Result};

/// The run folder: `path` itself when it holds run.json, else its `latest`.
pub fn run_folder(path: &Path) -> Result<PathBuf> {
    for candidate in [path.to_owned(), path.join("latest")] {
        if candidate.join("run.json").is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::input(path, None, "not a run folder (no run.json here or under latest/)"))
}

fn run_json(run: &Path) -> Result<serde_json::Value> {
    let path = run.join("run.json");
    let bytes = std::fs::read(&path).map_err(|e| Error::input(&path, None, format!("cannot read: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::input(&path, None, format!("not valid JSON: {e}")))
}

/// (stage, metric, index) → value.
pub type MetricMap = BTreeMap<(String, String, Option<i64>), f64>;

/// A metrics.parquet file as a map.
pub fn read_metrics(path: &Path) -> Result<MetricMap> {
    let mut out = BTreeMap::new();
    data::for_each_slice(path, &["stage", "metric", "index", "value"], 65_536, |t| {
        let (Some(ColumnData::Str(s)), Some(ColumnData::Str(m)), Some(ColumnData::OptI64(i)), Some(ColumnData::F64(v))) =
            (column(t, "stage"), column(t, "metric"), column(t, "index"), column(t, "value"))
        else {
            return Err(Error::input(path, None, "unexpected columns"));
        };
        for r in 0..s.len() {
            out.insert((s[r].clone(), m[r].clone(), i[r]), v[r]);
        }
        Ok(())
    })?;
    Ok(out)
}

fn get(m: &MetricMap, stage: &str, metric: &str) -> Option<f64> {
    m.get(&(stage.to_owned(), metric.to_owned(), None)).copied()
}

/// The terminal summary of a run.
pub fn show(path: &Path) -> Result<String> {
    let run = run_folder(path)?;
    let r = run_json(&run)?;
    let m = read_metrics(&run.join("metrics.parquet"))?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_owned();
    let mut o = String::new();
    let _ = writeln!(o, "run {} of job '{}' ({})", s(&r["run_id"]), s(&r["job"]), run.display());
    let _ = writeln!(o, "  config {}, seed {}", s(&r["config_file"]), r["seed"]);
    let _ = writeln!(o, "  started {}, finished {}", s(&r["started_at"]), s(&r["finished_at"]));
    let b = &r["backend"];
    let adapter = b["adapter"]["name"].as_str().map(|a| format!(", adapter {a}")).unwrap_or_default();
    let _ = writeln!(o, "  backend {} ({}{adapter})", s(&b["used"]), s(&b["reason"]));
    if let Some(line) = cache_line(&r, &m) {
        let _ = writeln!(o, "  {line}");
    }
    let _ = writeln!(o, "\nstages:");
    for st in r["stages"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  {:<15} {:>8.2} s  {}",
            s(&st["stage"]),
            st["seconds"].as_f64().unwrap_or(f64::NAN),
            s(&st["summary"])
        );
    }
    // The model against the popularity baseline, metric by metric.
    let model: Vec<(&str, f64)> = m
        .iter()
        .filter(|((st, _, i), _)| st == "eval_model" && i.is_none())
        .map(|((_, name, _), v)| (name.as_str(), *v))
        .filter(|(name, _)| !name.ends_with("_examples"))
        .collect();
    if !model.is_empty() {
        let _ = writeln!(o, "\nmodel against popularity (held-out users):");
        let _ = writeln!(o, "  {:<18} {:>8} {:>11}", "metric", "model", "popularity");
        for (name, v) in model {
            let p = get(&m, "eval_popularity", name).map_or("—".into(), |p| format!("{p:.4}"));
            let _ = writeln!(o, "  {name:<18} {v:>8.4} {p:>11}");
        }
    }
    let line =
        |label: &str, stage: &str, metric: &str| get(&m, stage, metric).map(|v| format!("  {label:<40} {}", value(v)));
    let mut keys: Vec<String> = [
        line("similarity: Spearman ρ with the pairs", "similarity", "spearman"),
        line("pca: components", "pca", "n_components"),
        line("pca: explained variance ratio (sum)", "pca", "explained_variance_ratio_sum"),
        line("train: examples/s", "train", "examples_per_second"),
        line("contextual: tokens/s", "contextual", "tokens_per_second"),
    ]
    .into_iter()
    .flatten()
    .collect();
    for ((st, name, i), v) in &m {
        let shown = (st == "similarity" && name.starts_with("label_agreement"))
            || (st == "eval_documents" && (name.contains("label_agreement") || name.contains("knn_accuracy")));
        if shown {
            let idx = i.map(|i| format!("[{i}]")).unwrap_or_default();
            keys.push(format!("  {:<40} {}", format!("{st}: {name}{idx}"), value(*v)));
        }
    }
    keys.extend(line("efficiency: peak RSS MB", "efficiency", "peak_rss_mb"));
    if !keys.is_empty() {
        let _ = writeln!(o, "\nkey metrics:");
        for k in keys {
            let _ = writeln!(o, "{k}");
        }
    }
    let _ = writeln!(o, "\nfiles:");
    for f in r["outputs"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  {:<42} {:>10} rows", s(&f["file"]), f["rows"].as_u64().unwrap_or(0));
    }
    Ok(o)
}

/// The encoder cache as the contextual stage used it: documents from it and encoded, its size and folder; or why
/// the run went without it.
fn cache_line(r: &serde_json::Value, m: &MetricMap) -> Option<String> {
    let c = &r["details"]["contextual"]["cache"];
    if let Some(why) = c["off"].as_str() {
        return Some(format!("cache off ({why})"));
    }
    let dir = c["dir"].as_str()?;
    let n = |metric: &str| get(m, "contextual", metric).map_or("?".into(), value);
    let mb = c["bytes"].as_f64().unwrap_or(0.0) / 1e6;
    Some(format!(
        "cache: {} of {} documents from the cache, {} encoded ({} duplicates); {} entries, {mb:.1} MB in {dir}",
        n("from_cache"),
        n("documents"),
        n("encoded"),
        n("duplicate_texts"),
        c["entries"].as_u64().unwrap_or(0),
    ))
}

/// A metric as people read it: whole numbers and large values without decimals, others to 4 places.
pub fn value(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// The embedding tables `neighbors` can search: (name, table: `<stem>.parquet` or a folder of parts, key column).
const TABLES: [(&str, &str, &str); 4] = [
    ("items", "embeddings", "item"),
    ("documents", "text_embeddings", "row"),
    ("pca", "pca_projections", "row"),
    ("tokens", "token_embeddings", "word"),
];

/// The `k` nearest vectors of `key` by cosine in one embedding table of the run (`table`: items, documents, pca;
/// default: the first the run has), itself left out. Ties go to the earlier row.
pub fn neighbors(path: &Path, key: &str, k: usize, table: Option<&str>) -> Result<String> {
    let run = run_folder(path)?;
    let (name, file, key_col) = match table {
        Some(t) => *TABLES
            .iter()
            .find(|(n, _, _)| *n == t)
            .ok_or_else(|| Error::input(&run, None, format!("no table '{t}' (items, documents, pca, tokens)")))?,
        None => *TABLES[..3].iter().find(|(_, f, _)| data::find_table(&run, f).is_some()).ok_or_else(|| {
            Error::input(&run, None, "the run has no embedding table (embeddings, text_embeddings, pca_projections)")
        })?,
    };
    let Some(path) = data::find_table(&run, file) else {
        return Err(Error::input(run.join(format!("{file}.parquet")), None, format!("this run has no {name} table")));
    };
    let (mut keys, mut values, mut dim) = (Vec::new(), Vec::new(), 0);
    data::for_each_slice(&path, &[key_col, "vector"], 65_536, |t| {
        if let (Some(c), Some(ColumnData::Vectors { dim: d, values: v })) = (column(t, key_col), column(t, "vector")) {
            keys.extend((0..c.len()).map(|i| cell(c, i)));
            values.extend_from_slice(v);
            dim = *d;
        }
        Ok(())
    })?;
    let query = match keys.iter().position(|x| x == key) {
        Some(q) => q,
        None => match keys.iter().position(|x| x.eq_ignore_ascii_case(key)) {
            Some(q) => q,
            None => {
                let lower = key.to_lowercase();
                let close: Vec<&str> =
                    keys.iter().filter(|x| x.to_lowercase().contains(&lower)).take(5).map(String::as_str).collect();
                let hint =
                    if close.is_empty() { String::new() } else { format!(" (did you mean: {})", close.join(", ")) };
                return Err(Error::input(&path, Some(key_col), format!("no {key_col} '{key}'{hint}")));
            }
        },
    };
    let norm = |r: usize| values[r * dim..(r + 1) * dim].iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let qn = norm(query);
    let q = &values[query * dim..(query + 1) * dim];
    let mut scored: Vec<(f64, usize)> = (0..keys.len())
        .filter(|&r| r != query)
        .map(|r| {
            let dot: f64 = q.iter().zip(&values[r * dim..(r + 1) * dim]).map(|(&a, &b)| a as f64 * b as f64).sum();
            let n = qn * norm(r);
            (if n > 0.0 { dot / n } else { 0.0 }, r)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut o = String::new();
    let _ = writeln!(o, "nearest to '{}' in {name} ({} vectors × {dim}, cosine):", keys[query], keys.len());
    for (rank, (c, r)) in scored.into_iter().take(k).enumerate() {
        let _ = writeln!(o, "  {:>3}  {c:>7.4}  {}", rank + 1, keys[r]);
    }
    Ok(o)
}
