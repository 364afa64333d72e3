//! `embjob bench cache`: what the encoder cache's lookup costs at scale, next to what it saves. A generated corpus
//! (tweet-length texts of words from the Lee corpus, each unique) is cached once under `--dir` (kept between runs:
//! 10^7 entries of 384 values are about 15 GB), then a nightly run's lookup is timed as the contextual stage runs
//! it: the key folder opened and every segment checked against its checksum, every input text hashed, the
//! segments' digests scanned ([`plan_rows`]); then, separately, every hit's vector read back. Two inputs: the whole
//! cached corpus with `--new-percent` new texts appended (the nightly case), and the new texts alone (memory then
//! shows what a cached document costs the lookup: nothing beyond the slice scanned). The yardstick is the CPU
//! encoding the new texts with the real model, measured on a sample of them by `bench encode`'s pass.

use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use super::{median, reset_peak_rss};
use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};
use crate::linalg::rng::SplitMix;
use crate::runtime::progress::Reporter;
use crate::stages::vector_cache::{plan_rows, text_digest, CacheKey, CacheStore, HitReader, Source, StagedSegment};

/// Options of `embjob bench cache`.
#[derive(Debug, Clone)]
pub struct CacheBenchOptions {
    /// Cached documents.
    pub entries: usize,
    /// Segments they are written in (at most 16 stay uncompacted).
    pub segments: usize,
    /// Vector dimension (all-MiniLM-L6-v2: 384).
    pub dim: usize,
    /// New texts appended to the cached ones, in percent of them.
    pub new_percent: f64,
    /// Where the generated cache is kept between runs.
    pub dir: PathBuf,
    /// lee_docs.parquet (the words of the generated texts).
    pub lee: PathBuf,
    /// The model whose CPU encoding is the yardstick; `None` skips it.
    pub model: Option<PathBuf>,
    /// New texts encoded to measure the encoding rate.
    pub sample: usize,
    pub repeats: usize,
}

/// One measured lookup.
#[derive(Debug, Clone)]
pub struct CacheMeasurement {
    pub input_rows: usize,
    pub from_cache: usize,
    pub to_encode: usize,
    pub open_s: f64,
    pub plan_s: f64,
    pub read_back_s: Option<f64>,
    pub peak_over_input_mb: f64,
}

/// The lookups measured, and the encoding yardstick (documents encoded, their median seconds) when a model ran.
pub struct CacheBench {
    pub entries: usize,
    pub segments: usize,
    pub cache_bytes: u64,
    pub lookups: Vec<CacheMeasurement>,
    pub encoding: Option<(usize, f64)>,
    pub new_rows: usize,
}

/// Collects notices (a skipped segment in the bench is a failure).
#[derive(Default)]
struct Notices(Mutex<Vec<String>>);

impl Reporter for Notices {
    fn notice(&self, message: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(message.to_owned());
        }
    }
}

/// Runs the benchmark (generating the cache first when `dir` does not hold it).
pub fn cache(opts: &CacheBenchOptions, log: &mut dyn Write) -> Result<CacheBench> {
    let words = vocabulary(&opts.lee)?;
    let new_rows = ((opts.entries as f64) * opts.new_percent / 100.0).round() as usize;
    let _ = writeln!(log, "texts: {} cached + {new_rows} new, words from {}", opts.entries, opts.lee.display());
    let texts: Vec<String> = (0..opts.entries + new_rows).into_par_iter().map(|i| text(&words, i)).collect();
    let key = bench_key(opts);
    let root = opts.dir.clone();
    ensure_corpus(opts, &key, &texts[..opts.entries], log)?;
    let mut lookups = Vec::new();
    let nightly = lookup(&root, &key, &texts, (opts.dim, opts.repeats), true, log)?;
    let (entries, segments, cache_bytes) = (nightly.1, nightly.2, nightly.3);
    lookups.push(nightly.0);
    lookups.push(lookup(&root, &key, &texts[opts.entries..], (opts.dim, opts.repeats), false, log)?.0);
    let encoding = match &opts.model {
        Some(model) => Some(encoding_rate(model, &texts[opts.entries..], opts, log)?),
        None => None,
    };
    Ok(CacheBench { entries, segments, cache_bytes, lookups, encoding, new_rows })
}

/// The distinct alphabetic words of the Lee corpus, sorted.
fn vocabulary(lee: &Path) -> Result<Vec<String>> {
    let (docs, _) = crate::data::read_text_column(lee, crate::plan::config::Format::Parquet, "text")?;
    let mut words: Vec<String> = docs
        .iter()
        .flat_map(|d| d.split_whitespace())
        .filter(|w| w.len() > 1 && w.chars().all(|c| c.is_ascii_alphabetic()))
        .map(str::to_lowercase)
        .collect();
    words.sort_unstable();
    words.dedup();
    if words.is_empty() {
        return Err(Error::input(lee, Some("text"), "no words to generate texts from"));
    }
    Ok(words)
}

/// Text `i` of the generated corpus: its number, then 8 to 32 words (a tweet's length), seeded by `i`.
fn text(words: &[String], i: usize) -> String {
    let mut rng = SplitMix::new(0x5eed_cace ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let n = 8 + rng.below(25);
    let mut s = format!("#{i}");
    for _ in 0..n {
        s.push(' ');
        s.push_str(&words[rng.below(words.len())]);
    }
    s
}

/// The bench's cache key (a key of its own, so it never meets a real run's vectors).
fn bench_key(opts: &CacheBenchOptions) -> CacheKey {
    CacheKey::from_parts(serde_json::json!({ "bench": "cache", "dim": opts.dim, "entries": opts.entries }))
}

/// Writes the cached corpus in `opts.segments` segments through the cache's own publishing path, unless the
/// key's folder already holds a complete one (`corpus.json` is written last).
fn ensure_corpus(opts: &CacheBenchOptions, key: &CacheKey, texts: &[String], log: &mut dyn Write) -> Result<()> {
    let marker = opts.dir.join(format!("{}.corpus.json", key.folder_name()));
    if marker.is_file() {
        let _ = writeln!(log, "cache: reusing {}", opts.dir.join(key.folder_name()).display());
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(opts.dir.join(key.folder_name()));
    let notices = Notices::default();
    let store = CacheStore::open(&opts.dir, key.clone(), &notices)?;
    let staging = opts.dir.join(".bench-staging");
    std::fs::create_dir_all(&staging).map_err(|e| Error::output(&staging, "cannot create", e))?;
    let per = texts.len().div_ceil(opts.segments.max(1)).max(1);
    let t = Instant::now();
    for (s, chunk) in texts.chunks(per).enumerate() {
        let mut segment = StagedSegment::new(&staging, &key.id, opts.dim);
        for (j, block) in chunk.chunks(8_192).enumerate() {
            let first = s * per + j * 8_192;
            let rows: Vec<([u8; 32], Vec<f32>)> = block
                .par_iter()
                .enumerate()
                .map(|(k, text)| (text_digest(text), vector(first + k, opts.dim)))
                .collect();
            for (k, (digest, v)) in rows.iter().enumerate() {
                // Token counts are the cached metadata only; the words plus [CLS] and [SEP] stand in for them.
                segment.push(digest, block[k].split(' ').count() + 2, false, v)?;
            }
        }
        if let Some(new) = segment.finish(&store.dir)? {
            new.bring_in()?.publish(&notices);
        }
        let _ =
            writeln!(log, "cache: segment {} of {} written ({:.0} s)", s + 1, opts.segments, t.elapsed().as_secs_f64());
    }
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::write(&marker, key.parts.to_string()).map_err(|e| Error::output(&marker, "cannot write", e))?;
    Ok(())
}

/// Row `i`'s generated vector: values in [-1, 1), seeded by `i`.
fn vector(i: usize, dim: usize) -> Vec<f32> {
    let mut rng = SplitMix::new(i as u64);
    (0..dim).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect()
}

/// The lookup of `texts`, timed `repeats` times (the median of each part); with `read_back`, every hit's vector is
/// read as the stage reads them (a row group at a time, in row order). Also the cache's entries, segments and bytes.
fn lookup(
    root: &Path,
    key: &CacheKey,
    texts: &[String],
    (dim, repeats): (usize, usize),
    read_back: bool,
    log: &mut dyn Write,
) -> Result<(CacheMeasurement, usize, usize, u64)> {
    let (mut opens, mut plans, mut reads, mut peak) = (Vec::new(), Vec::new(), Vec::new(), 0f64);
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let notices = Notices::default();
        let before = crate::runtime::memory::rss_mb();
        reset_peak_rss();
        let t = Instant::now();
        let store = CacheStore::open(root, key.clone(), &notices)?;
        let segments = store.segments(&notices)?;
        opens.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let rows = plan_rows(texts, segments, &key.id, &notices)?;
        plans.push(t.elapsed().as_secs_f64());
        peak = peak.max(crate::runtime::memory::peak_rss_mb() - before);
        if let Some(n) = notices.0.lock().ok().and_then(|v| v.first().cloned()) {
            return Err(Error::Stage { stage: "bench", message: format!("the generated cache is not clean: {n}") });
        }
        if read_back {
            let t = Instant::now();
            let sum = read_all(&rows, dim)?;
            reads.push(t.elapsed().as_secs_f64());
            let _ = writeln!(log, "  read back: {:.1} s (checksum {sum:.3})", reads.last().unwrap_or(&0.0));
        }
        let (encoded, cached, _) = rows.counts();
        let entries = rows.segments.iter().map(|(s, _)| s.rows).sum();
        let bytes = rows.segments.iter().map(|(s, _)| s.bytes).sum();
        let _ = writeln!(
            log,
            "lookup of {} texts: open and check {:.2} s, plan {:.2} s; {cached} from the cache, {encoded} to encode",
            texts.len(),
            opens.last().unwrap_or(&0.0),
            plans.last().unwrap_or(&0.0)
        );
        last = Some((encoded, cached, entries, rows.segments.len(), bytes));
    }
    let (encoded, cached, entries, segments, bytes) = last.unwrap_or_default();
    let m = CacheMeasurement {
        input_rows: texts.len(),
        from_cache: cached,
        to_encode: encoded,
        open_s: median(&mut opens),
        plan_s: median(&mut plans),
        read_back_s: read_back.then(|| median(&mut reads)),
        peak_over_input_mb: peak,
    };
    Ok((m, entries, segments, bytes))
}

/// Reads every cached row's vector in row order; the sum of their first values (so the reads are not elided).
fn read_all(rows: &crate::stages::vector_cache::RowPlan, dim: usize) -> Result<f64> {
    let mut reader = HitReader::new(&rows.segments, dim);
    let mut sum = 0f64;
    for source in &rows.sources {
        if let Source::Cached { segment, index, .. } = *source {
            sum += f64::from(reader.vector(segment, index)?[0]);
        }
    }
    Ok(sum)
}

/// The CPU's encoding of the first `opts.sample` new texts with the real model (`bench encode`'s pass): the
/// documents encoded and the median seconds.
fn encoding_rate(model: &Path, new: &[String], opts: &CacheBenchOptions, log: &mut dyn Write) -> Result<(usize, f64)> {
    let dir = super::tempfile_dir().ok_or_else(|| Error::Internal("no temporary folder".into()))?;
    let path = dir.join("sample.parquet");
    let sample: Vec<String> = new.iter().take(opts.sample.max(1)).cloned().collect();
    let written = crate::data::write_parquet(&Table::new(vec![("text", ColumnData::Str(sample))]), &path);
    let result = written.and_then(|_| {
        let eo = super::EncodeBenchOptions {
            model: model.to_owned(),
            sets: vec![super::TextSet {
                name: "new texts".into(),
                path: path.clone(),
                column: "text".into(),
                repeat: 1,
            }],
            repeats: opts.repeats.max(1),
            batch_tokens: 8192,
            backend: crate::plan::config::BackendChoice::Cpu,
            python: None,
            st_script: PathBuf::new(),
            ort_script: PathBuf::new(),
            peer_device: "cpu".into(),
            peer_batches: Vec::new(),
            peer_precisions: Vec::new(),
            precision: crate::encoder::PrecisionChoice::F32,
        };
        super::encode(&eo, log)
    });
    let _ = std::fs::remove_dir_all(&dir);
    let m = result?.into_iter().next().ok_or_else(|| Error::Internal("bench encode measured nothing".into()))?;
    Ok((m.documents, m.median_s))
}

/// The lookups as a Markdown table, then the yardstick: the lookup's share of encoding the new texts.
pub fn cache_table(b: &CacheBench) -> String {
    let mut s = format!(
        "cache: {} entries in {} segments, {:.0} MB\n\n| input rows | from the cache | to encode | open and checksums s | plan s | lookup s | vectors read back s | peak above the input MB | bytes per input row |\n|---|---|---|---|---|---|---|---|---|\n",
        b.entries,
        b.segments,
        b.cache_bytes as f64 / 1e6
    );
    for m in &b.lookups {
        s.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} |\n",
            m.input_rows,
            m.from_cache,
            m.to_encode,
            m.open_s,
            m.plan_s,
            m.open_s + m.plan_s,
            m.read_back_s.map_or("—".into(), |r| format!("{r:.1}")),
            m.peak_over_input_mb,
            m.peak_over_input_mb * 1048576.0 / m.input_rows.max(1) as f64
        ));
    }
    if let (Some((docs, secs)), Some(nightly)) = (b.encoding, b.lookups.first()) {
        let per_doc = secs / docs.max(1) as f64;
        let encode_new = per_doc * b.new_rows as f64;
        let lookup = nightly.open_s + nightly.plan_s;
        s.push_str(&format!(
            "\nencoding the {} new texts on the CPU: {:.0} s ({docs} of them encoded in {secs:.2} s, {:.1} documents/s); lookup / encoding = {:.3} (the issue's bound: 0.1)\n",
            b.new_rows,
            encode_new,
            docs as f64 / secs,
            lookup / encode_new
        ));
    }
    s
}
