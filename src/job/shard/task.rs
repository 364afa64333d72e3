//! One shard task: its files read, its documents counted and encoded, everything written into a staging folder that
//! an atomic rename turns into `shards/shard-<i>-of-<N>`. A retried task rewrites the same bytes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{
    assign, check_shardable, config_digest, list_input, shards_dir, Manifest, ShardSpec, CACHE_SEGMENT, MANIFEST,
};
use crate::data;
use crate::data::dataset::{Dataset, TextCorpus};
use crate::data::fingerprint::InputFingerprint;
use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};
use crate::plan::{InputColumns, InputSpec, Plan};
use crate::runtime::metrics::Metrics;
use crate::runtime::progress::Reporter;
use crate::stages::{Artifacts, Context};
use crate::text::vectorizer::DocCounts;

/// What a finished shard task reports.
#[derive(Debug, Clone)]
pub struct ShardSummary {
    pub spec: ShardSpec,
    /// The shard's folder.
    pub dir: PathBuf,
    pub files: usize,
    pub rows: usize,
}

/// Runs shard `spec` of the plan's input: its files read, its documents counted and encoded, a manifest, then the
/// commit. On error nothing of it is visible and an earlier copy stays.
pub fn run_shard(plan: &Plan, spec: ShardSpec, reporter: &dyn Reporter) -> Result<ShardSummary> {
    let started = Instant::now();
    check_shardable(plan)?;
    let share = Share::of(plan, spec)?;
    let staging = ShardStaging::create(&shards_dir(plan), &spec.dir_name())?;
    let (corpus, files) = read_share(plan, &share, reporter)?;
    let rows = corpus.texts.len();
    crate::runtime::interrupt::check()?;
    data::write_parquet(
        &Table::new(vec![
            ("row_id", ColumnData::I64((share.first_row..share.first_row + rows).map(|r| r as i64).collect())),
            ("row", ColumnData::Str(corpus.ids.clone())),
        ]),
        &staging.dir.join("rows.parquet"),
    )?;
    let counted = count_share(plan, &corpus, &staging.dir, reporter)?;
    let (contextual, encode_seconds, cache_store) =
        encode_share(plan, corpus, share.first_row, &staging.dir, reporter)?;
    crate::runtime::interrupt::check()?;
    let mut written = Vec::new();
    for name in ["rows.parquet", "tokens.parquet", "counts.parquet", "text_embeddings.parquet", CACHE_SEGMENT] {
        if let Ok(meta) = std::fs::metadata(staging.dir.join(name)) {
            written.push((name.to_owned(), meta.len()));
        }
    }
    let own_files = share.own.len();
    let manifest = Manifest {
        embjob: env!("CARGO_PKG_VERSION").to_owned(),
        job: plan.job_name.clone(),
        shard: spec.index,
        shards: spec.count,
        config_digest: config_digest(plan)?,
        listing: share.listing,
        files,
        first_row: share.first_row,
        rows,
        tokens: counted.tokens,
        pairs: counted.pairs,
        stop_words_dropped: counted.stop_words_dropped,
        contextual,
        encode_seconds,
        cache_store,
        seconds: started.elapsed().as_secs_f64(),
        written,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let path = staging.dir.join(MANIFEST);
    std::fs::write(&path, json).map_err(|e| Error::output(&path, "cannot write", e))?;
    crate::runtime::interrupt::check()?;
    let dir = staging.commit()?;
    Ok(ShardSummary { spec, dir, files: own_files, rows })
}

/// A shard's share of the input: every file listed, the shard's own files, and the global index of its first row.
struct Share {
    spec: ShardSpec,
    listing: Vec<super::ListedFile>,
    own: Vec<PathBuf>,
    first_row: usize,
}

impl Share {
    fn of(plan: &Plan, spec: ShardSpec) -> Result<Share> {
        let listing = list_input(plan)?;
        let owner = assign(&listing.iter().map(super::ListedFile::weight).collect::<Vec<_>>(), spec.count);
        let own: Vec<PathBuf> =
            (0..listing.len()).filter(|&j| owner[j] == spec.index).map(|j| plan.input.files[j].clone()).collect();
        // Rows in the files of the shards before this one: footers for Parquet, a read of each file for CSV.
        let first_row = (0..listing.len())
            .filter(|&j| owner[j] < spec.index)
            .map(|j| match listing[j].rows {
                Some(r) => Ok(r as usize),
                None => data::file_rows(&plan.input, &plan.input.files[j]),
            })
            .sum::<Result<usize>>()?;
        Ok(Share { spec, listing, own, first_row })
    }
}

/// The share's documents (ids: the id column's, or the row number in the whole input) and its files' fingerprints.
fn read_share(plan: &Plan, share: &Share, reporter: &dyn Reporter) -> Result<(TextCorpus, Vec<InputFingerprint>)> {
    reporter.stage_started("ingest", None);
    let t = Instant::now();
    let files = share.own.iter().map(|f| crate::data::fingerprint::fingerprint(f)).collect::<Result<Vec<_>>>()?;
    let corpus = if share.own.is_empty() {
        TextCorpus { ids: Vec::new(), texts: Vec::new() }
    } else {
        let input = InputSpec { files: share.own.clone(), ..plan.input.clone() };
        let Dataset::Text(mut corpus) = data::read_input(&input)? else {
            return Err(Error::Internal("a text job read something else than documents".into()));
        };
        if matches!(plan.input.columns, InputColumns::Text { id: None, .. }) {
            let first = share.first_row;
            corpus.ids = (first..first + corpus.texts.len()).map(|r| r.to_string()).collect();
        }
        corpus
    };
    let (own, all, first, rows) = (share.own.len(), share.listing.len(), share.first_row, corpus.texts.len());
    let summary = format!("shard {}: {own} of {all} files, {rows} documents from row {first}", share.spec);
    reporter.stage_finished("ingest", &summary, t.elapsed().as_secs_f64());
    Ok((corpus, files))
}

/// What a shard's counting found: distinct tokens, (document, token) pairs, stop words dropped.
#[derive(Default)]
struct Counted {
    tokens: usize,
    pairs: usize,
    stop_words_dropped: u64,
}

/// With `[bow]`: the documents' token counts over the shard's own sorted tokens, written into `dir`.
fn count_share(plan: &Plan, corpus: &TextCorpus, dir: &Path, reporter: &dyn Reporter) -> Result<Counted> {
    let Some(bow) = &plan.bow else { return Ok(Counted::default()) };
    let t = Instant::now();
    let counts = crate::text::vectorizer::count_texts(bow, &corpus.texts)?;
    let counted = Counted {
        tokens: counts.universe.len(),
        pairs: counts.docs.iter().map(Vec::len).sum(),
        stop_words_dropped: counts.stop_words_dropped,
    };
    write_counts(&counts, dir)?;
    let summary = format!("{} distinct tokens, {} (document, token) pairs", counted.tokens, counted.pairs);
    reporter.stage_finished("bow", &summary, t.elapsed().as_secs_f64());
    Ok(counted)
}

/// What a shard's contextual stage reports: its counts, its seconds, and the cache's key folder when it used one.
type ShareResult = (Vec<(String, f64)>, f64, Option<PathBuf>);

/// With `[contextual]`: the documents' vectors, written into `dir` by the contextual stage itself; its counts (times
/// and rates left out, so that a retried task writes the same manifest but for its times) and its seconds.
fn encode_share(
    plan: &Plan,
    corpus: TextCorpus,
    first_row: usize,
    dir: &Path,
    reporter: &dyn Reporter,
) -> Result<ShareResult> {
    if plan.contextual.is_none() || corpus.texts.is_empty() {
        return Ok((Vec::new(), 0.0, None));
    }
    crate::runtime::interrupt::check()?;
    let (compute, backend) = crate::backend::open(plan.backend)?;
    if plan.backend == crate::plan::config::BackendChoice::Auto {
        reporter.notice(&format!("backend: {}", backend.reason));
    }
    let ctx =
        Context { plan, backend: compute.as_ref(), report: &backend, reporter, out_dir: dir, first_row, shards: None };
    let mut artifacts = Artifacts { dataset: Some(Dataset::Text(corpus)), ..Artifacts::default() };
    let mut metrics = Metrics::default();
    crate::stages::run(crate::stages::Stage::Contextual, &ctx, &mut artifacts, &mut metrics)?;
    let seconds = metrics.get("contextual", "seconds").unwrap_or(0.0);
    // The shard's new vectors stay in its folder; the merge publishes them into the cache.
    let mut cache_store = None;
    if let (Some(store), Some(segment)) = (artifacts.cache_store.take(), artifacts.cache_segments.pop()) {
        let dest = dir.join(CACHE_SEGMENT);
        std::fs::rename(&segment.path, &dest).map_err(|e| Error::output(&dest, "cannot write", e))?;
        cache_store = Some(store);
    }
    // Sums over shards are meaningless for these: timings, and the cache's size (each shard saw the same cache).
    let timing =
        ["seconds", "documents_per_second", "tokens_per_second", "peak_rss_mb", "cache_entries", "cache_bytes"];
    let counts = metrics
        .rows
        .into_iter()
        .filter(|m| !timing.contains(&m.metric.as_str()))
        .map(|m| (m.metric, m.value))
        .collect();
    Ok((counts, seconds, cache_store))
}

/// A shard's counts as two tables: `tokens.parquet` (token, in sorted order: the token id is the row) and
/// `counts.parquet` (doc: the document's index within the shard, token, count), documents in order.
fn write_counts(counts: &DocCounts, dir: &Path) -> Result<()> {
    data::write_parquet(
        &Table::new(vec![("token", ColumnData::Str(counts.universe.clone()))]),
        &dir.join("tokens.parquet"),
    )?;
    let (mut doc, mut token, mut count) = (Vec::new(), Vec::new(), Vec::new());
    for (d, pairs) in counts.docs.iter().enumerate() {
        for &(t, c) in pairs {
            doc.push(d as i64);
            token.push(t as i32);
            count.push(c as i64);
        }
    }
    data::write_parquet(
        &Table::new(vec![
            ("doc", ColumnData::I64(doc)),
            ("token", ColumnData::I32(token)),
            ("count", ColumnData::I64(count)),
        ]),
        &dir.join("counts.parquet"),
    )
}

/// A shard's staging folder `shards/.staging-<name>-<pid>`: removed on drop unless committed; committing replaces
/// an earlier copy of the shard (a retried task) with two renames.
struct ShardStaging {
    dir: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl ShardStaging {
    fn create(parent: &Path, name: &str) -> Result<ShardStaging> {
        std::fs::create_dir_all(parent).map_err(|e| Error::output(parent, "cannot create the shards folder", e))?;
        crate::job::run_dir::remove_stale_staging(parent);
        let dir = parent.join(format!("{}{name}-{}", crate::job::run_dir::STAGING_PREFIX, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| Error::output(&dir, "cannot create the staging folder", e))?;
        Ok(ShardStaging { dir, target: parent.join(name), committed: false })
    }

    fn commit(mut self) -> Result<PathBuf> {
        crate::job::run_dir::sync_dir(&self.dir);
        let parent = self.target.parent().map(Path::to_path_buf).unwrap_or_default();
        if self.target.exists() {
            let name = self.target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let old = parent.join(format!("{}old-{name}-{}", crate::job::run_dir::STAGING_PREFIX, std::process::id()));
            std::fs::rename(&self.target, &old)
                .map_err(|e| Error::output(&self.target, "cannot move the earlier copy of the shard aside", e))?;
            std::fs::rename(&self.dir, &self.target)
                .map_err(|e| Error::output(&self.target, "cannot move the shard into place", e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.dir, &self.target)
                .map_err(|e| Error::output(&self.target, "cannot move the shard into place", e))?;
        }
        self.committed = true;
        crate::job::run_dir::sync_dir(&parent);
        Ok(self.target.clone())
    }
}

impl Drop for ShardStaging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
