//! The shards of one split, checked before anything is merged: all there, from this embjob, this config and this
//! input. What they hold is read back in shard order, which is input order.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use super::{check_shardable, config_digest, list_input, shards_dir, Manifest, ShardSpec, MANIFEST};
use crate::data;
use crate::data::dataset::{Dataset, TextCorpus};
use crate::data::fingerprint::InputFingerprint;
use crate::data::table::ColumnData;
use crate::error::{Error, Result};
use crate::plan::{InputColumns, Plan};
use crate::runtime::metrics::Metrics;
use crate::stages::{MergedInput, TextPart};
use crate::text::vectorizer::DocCounts;

/// A complete, checked set of shards.
#[derive(Debug, Clone)]
pub struct ShardSet {
    /// Each shard's folder, in shard order.
    pub dirs: Vec<PathBuf>,
    pub manifests: Vec<Manifest>,
    /// The input's id column (its ids must be unique over all shards) and path, for the errors that name it.
    id_column: Option<String>,
    input_path: PathBuf,
}

impl ShardSet {
    /// The one complete split under `<output.dir>/shards` for this plan, or an error naming what is missing or
    /// does not belong (exit code 3); nothing is read but the manifests.
    pub fn open(plan: &Plan) -> Result<ShardSet> {
        check_shardable(plan)?;
        let dirs = complete_split(plan)?;
        let (digest, listing) = (config_digest(plan)?, list_input(plan)?);
        let manifests = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| read_manifest(plan, dir, (i, dirs.len()), &digest, &listing))
            .collect::<Result<Vec<_>>>()?;
        let id_column = match &plan.input.columns {
            InputColumns::Text { id, .. } => id.clone(),
            _ => None,
        };
        Ok(ShardSet { dirs, manifests, id_column, input_path: plan.input.path.clone() })
    }

    /// How many shards.
    pub fn count(&self) -> usize {
        self.dirs.len()
    }
}

impl MergedInput for ShardSet {
    /// The shards' `cache_segment.parquet` files (a shard that encoded nothing new has none).
    fn cache_segments(&self) -> Vec<crate::stages::vector_cache::NewSegment> {
        let mut out = Vec::new();
        for (dir, m) in self.dirs.iter().zip(&self.manifests) {
            let path = dir.join(super::CACHE_SEGMENT);
            if let (Some(store), Ok(meta)) = (&m.cache_store, std::fs::metadata(&path)) {
                let rows = m.contextual.iter().find(|(n, _)| n == "encoded").map_or(0, |(_, v)| *v as usize);
                out.push(crate::stages::vector_cache::NewSegment {
                    path,
                    store_dir: store.clone(),
                    rows,
                    bytes: meta.len(),
                });
            }
        }
        out
    }

    fn parts(&self) -> usize {
        self.count()
    }

    /// Every input file's fingerprint, in input order (as each shard took it).
    fn fingerprints(&self) -> Vec<InputFingerprint> {
        self.manifests.iter().flat_map(|m| m.files.iter().cloned()).collect()
    }

    /// The documents' ids in input order (their texts stay with the shards). Ids from an id column must be unique
    /// over all shards, as in a single run.
    fn corpus(&self) -> Result<Dataset> {
        let mut ids: Vec<String> = Vec::new();
        for (dir, m) in self.dirs.iter().zip(&self.manifests) {
            let path = dir.join("rows.parquet");
            let table = read_all(&path, &["row_id", "row"], &["row"])?;
            let (Some(ColumnData::OptI64(row_id)), Some(ColumnData::Str(row))) =
                (col(&table, "row_id"), col(&table, "row"))
            else {
                return Err(Error::input(&path, None, "unexpected columns"));
            };
            if row.len() != m.rows || row_id.iter().enumerate().any(|(r, &g)| g != Some((m.first_row + r) as i64)) {
                return Err(Error::input(&path, None, "rows do not match the shard's manifest"));
            }
            if m.first_row != ids.len() {
                return Err(Error::input(
                    &path,
                    None,
                    format!("starts at row {}, after {} rows", m.first_row, ids.len()),
                ));
            }
            ids.extend(row.iter().cloned());
        }
        if let Some(id) = &self.id_column {
            let mut seen = HashSet::new();
            if let Some(dup) = ids.iter().find(|i| !seen.insert(i.as_str())) {
                return Err(Error::input(
                    &self.input_path,
                    Some(id),
                    format!("id '{dup}' appears on more than one row"),
                ));
            }
        }
        let texts = vec![String::new(); ids.len()];
        Ok(Dataset::Text(TextCorpus { ids, texts }))
    }

    /// All documents' token counts, in input order, over the union of the shards' tokens.
    fn doc_counts(&self) -> Result<DocCounts> {
        let mut parts = Vec::with_capacity(self.count());
        for (dir, m) in self.dirs.iter().zip(&self.manifests) {
            let tpath = dir.join("tokens.parquet");
            let Some(ColumnData::Str(universe)) = col(&read_all(&tpath, &["token"], &["token"])?, "token").cloned()
            else {
                return Err(Error::input(&tpath, None, "unexpected columns"));
            };
            let cpath = dir.join("counts.parquet");
            let t = read_all(&cpath, &["doc", "token", "count"], &[])?;
            let (Some(ColumnData::OptI64(doc)), Some(ColumnData::OptI64(token)), Some(ColumnData::OptI64(count))) =
                (col(&t, "doc"), col(&t, "token"), col(&t, "count"))
            else {
                return Err(Error::input(&cpath, None, "unexpected columns"));
            };
            let mut docs: Vec<Vec<(u32, u64)>> = vec![Vec::new(); m.rows];
            for r in 0..doc.len() {
                let (d, tok, c) = (doc[r].unwrap_or(-1), token[r].unwrap_or(-1), count[r].unwrap_or(0));
                if d < 0 || d as usize >= m.rows || tok < 0 || tok as usize >= universe.len() || c <= 0 {
                    return Err(Error::input(&cpath, None, format!("row {r} is out of range")));
                }
                docs[d as usize].push((tok as u32, c as u64));
            }
            if universe.len() != m.tokens || doc.len() != m.pairs {
                return Err(Error::input(&cpath, None, "counts do not match the shard's manifest"));
            }
            parts.push(DocCounts { universe, docs, stop_words_dropped: m.stop_words_dropped });
        }
        Ok(DocCounts::concat(parts))
    }

    /// The shards' text vector files, in shard order, with their shard index (empty shards have none).
    fn text_parts(&self) -> Vec<TextPart> {
        (0..self.count())
            .map(|i| TextPart {
                index: i,
                path: self.dirs[i].join("text_embeddings.parquet"),
                rows: self.manifests[i].rows,
            })
            .filter(|p| p.rows > 0 && p.path.is_file())
            .collect()
    }

    /// The contextual metrics over all shards: counts add up; `seconds` is the shards' summed encoding time, and
    /// the rates are per second of it (one node's throughput).
    fn contextual_metrics(&self, metrics: &mut Metrics) {
        let sum = |name: &str| -> f64 {
            self.manifests.iter().flat_map(|m| m.contextual.iter()).filter(|(n, _)| n == name).map(|(_, v)| v).sum()
        };
        let any = |name: &str| -> f64 {
            self.manifests.iter().flat_map(|m| m.contextual.iter()).find(|(n, _)| n == name).map_or(0.0, |(_, v)| *v)
        };
        let seconds = self.manifests.iter().map(|m| m.encode_seconds).sum::<f64>().max(1e-9);
        let (docs, tokens) = (sum("documents"), sum("encoded_tokens"));
        // Duplicates are found within each shard: a text in two shards is encoded (or read from the cache) twice.
        let counts = [
            "documents",
            "tokens",
            "truncated_documents",
            "encoded",
            "encoded_tokens",
            "from_cache",
            "duplicate_texts",
            "batches",
            "row_groups",
        ];
        for name in counts {
            metrics.push("contextual", name, sum(name));
        }
        metrics.push("contextual", "embedding_dim", any("embedding_dim"));
        metrics.push("contextual", "seconds", seconds);
        metrics.push("contextual", "documents_per_second", docs / seconds);
        metrics.push("contextual", "tokens_per_second", tokens / seconds);
    }
}

/// `run embjob run <config> --shard I/N` for each missing I.
fn run_hint(plan: &Plan, n: usize) -> String {
    format!("run `embjob run {} --shard I/{n}` for each missing I", plan.config_file.display())
}

/// The folders of the one split under `<output.dir>/shards`, in shard order: an error when there is none, more
/// than one, or a shard of it is missing.
fn complete_split(plan: &Plan) -> Result<Vec<PathBuf>> {
    let parent = shards_dir(plan);
    let mut splits: BTreeMap<usize, BTreeMap<usize, PathBuf>> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(&parent) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(spec) = ShardSpec::from_dir_name(&name) {
                splits.entry(spec.count).or_default().insert(spec.index, e.path());
            }
        }
    }
    let (count, found) = match splits.len() {
        0 => {
            let hint = run_hint(plan, 64).replace("I/64", "I/N").replace(" missing I", " I in 0..N");
            return Err(Error::input(&parent, None, format!("no shards to merge: {hint}")));
        }
        1 => splits.into_iter().next().ok_or_else(|| Error::Internal("one split".into()))?,
        _ => {
            let names: Vec<String> = splits.keys().map(|n| format!("of {n}")).collect();
            return Err(Error::input(
                &parent,
                None,
                format!(
                    "shards of {} different splits ({}): remove the folders of the splits not to merge",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
    };
    let missing: Vec<String> = (0..count).filter(|i| !found.contains_key(i)).map(|i| i.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::input(
            &parent,
            None,
            format!(
                "{} of {count} shards missing (shard {}): {}",
                missing.len(),
                shorten(&missing),
                run_hint(plan, count)
            ),
        ));
    }
    Ok(found.into_values().collect())
}

/// Shard `i` of `count`'s manifest, checked: its place in the split, the embjob that wrote it, the config sections
/// its results depend on, and the input it read.
fn read_manifest(
    plan: &Plan,
    dir: &Path,
    (i, count): (usize, usize),
    digest: &str,
    listing: &[super::ListedFile],
) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = std::fs::read(&path).map_err(|e| {
        Error::input(
            &path,
            None,
            format!("shard {i}/{count} has no readable manifest ({e}): {}", run_hint(plan, count)),
        )
    })?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::input(&path, None, format!("not a shard manifest: {e}")))?;
    let refuse = |why: String| Err(Error::input(&path, None, format!("shard {i}/{count} {why}")));
    let version = env!("CARGO_PKG_VERSION");
    if m.shard != i || m.shards != count {
        return refuse(format!("says it is shard {}/{}", m.shard, m.shards));
    }
    if m.embjob != version {
        return refuse(format!("was written by embjob {}, this is {version}: rerun it", m.embjob));
    }
    if m.config_digest != digest {
        return refuse(format!(
            "was computed with other [input], [bow] or [contextual] settings than {} has now: rerun it",
            plan.config_file.display()
        ));
    }
    if m.listing != listing {
        return refuse(format!("read another input: {}: rerun it", listing_change(&m.listing, listing)));
    }
    Ok(m)
}

fn col<'t>(t: &'t crate::data::table::Table, name: &str) -> Option<&'t ColumnData> {
    t.columns.iter().find(|(c, _)| c == name).map(|(_, d)| d)
}

/// A whole Parquet file of a shard, as one table; `text` names its text columns (the others hold integers), for
/// the empty table of a file with no rows.
fn read_all(path: &Path, columns: &[&str], text: &[&str]) -> Result<crate::data::table::Table> {
    let mut out: Option<crate::data::table::Table> = None;
    data::for_each_slice(path, columns, 1 << 20, |t| {
        match &mut out {
            None => out = Some(t.clone()),
            Some(o) => {
                for ((_, a), (_, b)) in o.columns.iter_mut().zip(&t.columns) {
                    append(a, b)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(out.unwrap_or_else(|| crate::data::table::Table {
        columns: columns
            .iter()
            .map(|c| {
                let empty = if text.contains(c) { ColumnData::Str(Vec::new()) } else { ColumnData::OptI64(Vec::new()) };
                ((*c).to_owned(), empty)
            })
            .collect(),
    }))
}

fn append(a: &mut ColumnData, b: &ColumnData) -> Result<()> {
    match (a, b) {
        (ColumnData::OptI64(a), ColumnData::OptI64(b)) => a.extend_from_slice(b),
        (ColumnData::Str(a), ColumnData::Str(b)) => a.extend_from_slice(b),
        (ColumnData::F64(a), ColumnData::F64(b)) => a.extend_from_slice(b),
        (ColumnData::Vectors { values: a, .. }, ColumnData::Vectors { values: b, .. }) => a.extend_from_slice(b),
        _ => return Err(Error::Internal("columns of different types".into())),
    }
    Ok(())
}

/// What differs between a shard's listing of the input and the merge's: the first file added, removed or changed.
fn listing_change(shard: &[super::ListedFile], now: &[super::ListedFile]) -> String {
    for f in shard {
        match now.iter().find(|g| g.path == f.path) {
            None => return format!("{} is gone", f.path.display()),
            Some(g) if g != f => return format!("{} changed since the shard read it", f.path.display()),
            _ => {}
        }
    }
    match now.iter().find(|g| !shard.iter().any(|f| f.path == g.path)) {
        Some(g) => format!("{} was added since", g.path.display()),
        None => "the files are in another order".into(),
    }
}

/// "1, 2, 5" or "1, 2, 3, … (40 in all)".
fn shorten(items: &[String]) -> String {
    if items.len() <= 8 {
        items.join(", ")
    } else {
        format!("{}, … ({} in all)", items[..8].join(", "), items.len())
    }
}
