//! `embjob bench encode`: contextual encoding throughput (documents/s, tokens/s, peak memory) of a model folder on
//! real text, embjob next to sentence-transformers (PyTorch) and ONNX Runtime run in the same command. Every tool
//! times the same thing: tokenizing and encoding the whole text column, vectors pooled (and normalised when the
//! folder says so), after one warm-up pass.

use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{median, reset_peak_rss};
use crate::data::table::{ColumnData, Table};
use crate::encoder::{Encoder, TextTokenizer, WeightsFile};
use crate::error::{Error, Result};
use crate::plan::config::{BackendChoice, ContextualConfig, Format};

/// One text column to encode.
#[derive(Debug, Clone)]
pub struct TextSet {
    pub name: String,
    pub path: PathBuf,
    pub column: String,
    /// The column's texts this many times over (the long set: Lee × 20, about 1.2 million tokens).
    pub repeat: usize,
}

/// Options of `embjob bench encode`.
#[derive(Debug, Clone)]
pub struct EncodeBenchOptions {
    pub model: PathBuf,
    pub sets: Vec<TextSet>,
    pub repeats: usize,
    pub batch_tokens: u64,
    pub backend: BackendChoice,
    /// Python for the peers; `None` skips them.
    pub python: Option<String>,
    pub st_script: PathBuf,
    pub ort_script: PathBuf,
    pub peer_device: String,
    /// Documents per batch for the peers, each measured (sentence-transformers' default is 32).
    pub peer_batches: Vec<usize>,
    /// sentence-transformers in f32 and/or f16 (`model.half()`); onnxruntime runs in f32 only.
    pub peer_precisions: Vec<PeerPrecision>,
    /// embjob's `contextual.precision`.
    pub precision: crate::encoder::PrecisionChoice,
}

/// The precision a peer runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPrecision {
    F32,
    F16,
}

/// One measured tool on one text set.
#[derive(Debug, Clone)]
pub struct EncodeMeasurement {
    pub set: String,
    pub tool: String,
    pub documents: usize,
    pub tokens: usize,
    pub median_s: f64,
    pub peak_mb: Option<f64>,
    pub runs: usize,
}

impl EncodeMeasurement {
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.median_s
    }
}

/// The set's non-null texts, also written to `dir/<index>.parquet` (column `text`) so that the peers read exactly
/// the same documents.
fn prepare(set: &TextSet, index: usize, dir: &Path, log: &mut dyn Write) -> Result<(Vec<String>, PathBuf)> {
    let (once, nulls) = crate::data::read_text_column(&set.path, Format::Parquet, &set.column)?;
    if nulls > 0 {
        let _ = writeln!(log, "{}: {nulls} null values in '{}' skipped", set.name, set.column);
    }
    let texts: Vec<String> = std::iter::repeat_n(once, set.repeat.max(1)).flatten().collect();
    let copy = dir.join(format!("{index}.parquet"));
    crate::data::write_parquet(&Table::new(vec![("text", ColumnData::Str(texts.clone()))]), &copy)?;
    Ok((texts, copy))
}

/// Encodes every set with embjob, then with each peer that runs.
pub fn encode(opts: &EncodeBenchOptions, log: &mut dyn Write) -> Result<Vec<EncodeMeasurement>> {
    let cfg = ContextualConfig {
        model: opts.model.to_string_lossy().into_owned(),
        pooling: Default::default(),
        normalize: Default::default(),
        max_tokens: None,
        truncate: true,
        batch_tokens: opts.batch_tokens,
        words: None,
        words_limit: 1,
        layers: None,
        static_control: true,
        cache: false,
        precision: opts.precision,
        compare: None,
    };
    let plan = crate::plan::contextual_plan(&cfg, crate::encoder::ModelFolder::open(&opts.model)?)?;
    let (be, report) = crate::backend::open(opts.backend)?;
    let _ = writeln!(log, "backend: {} ({})", report.used, report.reason);
    let (precision, why) = crate::encoder::resolve_precision(plan.encode.precision, be.as_ref())?;
    let _ = writeln!(log, "precision: {precision:?} ({why})");
    let adapter = report.adapter.as_ref().map_or("cpu".to_owned(), |a| a.name.clone());
    let tool = format!("embjob ({adapter}, {})", format!("{precision:?}").to_lowercase());
    let tokenizer = TextTokenizer::open(&plan.folder.tokenizer_file(), plan.encode.max_tokens)?;
    let weights = WeightsFile::open(&plan.folder.weights_file())?;
    let mut encoder = Encoder::new(be.as_ref(), plan.folder.config.clone(), &weights, precision)?;
    drop(weights);

    let dir = super::tempfile_dir().ok_or_else(|| Error::Internal("no temporary folder".into()))?;
    let result = run_sets(opts, &dir, &tool, &tokenizer, &mut encoder, &plan, log);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(profile) = be.profile_report() {
        let _ = writeln!(log, "GPU kernel times (every pass):\n{profile}");
    }
    result
}

fn run_sets(
    opts: &EncodeBenchOptions,
    dir: &Path,
    tool: &str,
    tokenizer: &TextTokenizer,
    encoder: &mut Encoder<'_>,
    plan: &crate::plan::ContextualPlan,
    log: &mut dyn Write,
) -> Result<Vec<EncodeMeasurement>> {
    let mut all = Vec::new();
    for (index, set) in opts.sets.iter().enumerate() {
        let (texts, copy) = prepare(set, index, dir, log)?;
        let mut times = Vec::new();
        let (mut tokens, mut peak) = (0usize, 0f64);
        // One warm-up pass (kernels compiled, workspace sized), then the timed ones.
        for run in 0..=opts.repeats.max(1) {
            reset_peak_rss();
            let t = Instant::now();
            let toks = texts.par_iter().map(|s| tokenizer.encode(s)).collect::<Result<Vec<_>>>()?;
            let lengths: Vec<usize> = toks.iter().map(|t| t.ids.len()).collect();
            encode_pass(encoder, &toks, &lengths, plan)?;
            let s = t.elapsed().as_secs_f64();
            tokens = lengths.iter().sum();
            peak = peak.max(crate::runtime::memory::peak_rss_mb());
            if run > 0 {
                times.push(s);
            }
            let _ = writeln!(
                log,
                "{tool} {}: {}{:.2} s, {:.0} tokens/s",
                set.name,
                if run == 0 { "warm-up " } else { "" },
                s,
                tokens as f64 / s
            );
        }
        all.push(EncodeMeasurement {
            set: set.name.clone(),
            tool: tool.to_owned(),
            documents: texts.len(),
            tokens,
            median_s: median(&mut times),
            peak_mb: Some(peak),
            runs: times.len(),
        });
        let Some(py) = &opts.python else { continue };
        all.extend(run_peers(py, opts, set, &copy, log));
    }
    Ok(all)
}

/// One pass over a set's tokenized documents, as the contextual stage runs it: one batch in flight while the next
/// is recorded and submitted. The vectors in input order.
fn encode_pass(
    encoder: &mut Encoder<'_>,
    toks: &[crate::encoder::Tokens],
    lengths: &[usize],
    plan: &crate::plan::ContextualPlan,
) -> Result<Vec<f32>> {
    let h = plan.folder.config.hidden_size;
    let mut vectors = vec![0f32; toks.len() * h];
    let batches = crate::stages::contextual::batches(lengths, plan.encode.batch_tokens);
    let mut in_flight: Option<(crate::encoder::PendingVectors, &[usize])> = None;
    // A last empty step takes the final batch's vectors.
    for batch in batches.iter().map(Vec::as_slice).chain([&[][..]]) {
        let next = if batch.is_empty() {
            None
        } else {
            let docs: Vec<_> = batch.iter().map(|&d| toks[d].clone()).collect();
            Some((encoder.embed_start(&docs, plan.encode.pooling, plan.encode.normalize)?, batch))
        };
        if let Some((pending, before)) = std::mem::replace(&mut in_flight, next) {
            let (v, _) = encoder.embed_finish(pending)?;
            for (i, &d) in before.iter().enumerate() {
                vectors[d * h..(d + 1) * h].copy_from_slice(&v[i * h..(i + 1) * h]);
            }
        }
    }
    Ok(vectors)
}

/// Every peer run on one set: sentence-transformers at each batch size and precision, onnxruntime (f32) at each
/// batch size. A peer that does not run is logged and left out.
fn run_peers(
    py: &str,
    opts: &EncodeBenchOptions,
    set: &TextSet,
    copy: &Path,
    log: &mut dyn Write,
) -> Vec<EncodeMeasurement> {
    let mut runs: Vec<(&str, &Path, usize, PeerPrecision)> = Vec::new();
    for &batch in &opts.peer_batches {
        for &precision in &opts.peer_precisions {
            runs.push(("sentence-transformers", &opts.st_script, batch, precision));
        }
        if opts.peer_precisions.contains(&PeerPrecision::F32) {
            runs.push(("onnxruntime", &opts.ort_script, batch, PeerPrecision::F32));
        }
    }
    let mut all = Vec::new();
    for (name, script, batch, precision) in runs {
        let _ = writeln!(log, "{name} ({}, batch {batch}, {precision:?}) {}: ...", opts.peer_device, set.name);
        match peer(py, script, opts, set, copy, batch, precision) {
            Ok(mut m) => {
                m.tool = format!("{} ({}, batch {batch})", m.tool, opts.peer_device);
                all.push(m);
            }
            Err(why) => {
                let _ = writeln!(log, "  (peer unavailable: {py} {}: {why})", script.display());
            }
        }
    }
    all
}

/// Runs a peer script (the JSON-lines protocol of shared/peers/ref_encode.py; `--half` for f16, which
/// scripts/peers/st_encode.py takes) and reads its result line.
fn peer(
    python: &str,
    script: &Path,
    opts: &EncodeBenchOptions,
    set: &TextSet,
    texts: &Path,
    batch: usize,
    precision: PeerPrecision,
) -> std::result::Result<EncodeMeasurement, String> {
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--model", &opts.model.to_string_lossy(), "--parquet", &texts.to_string_lossy()])
        .args(["--column", "text", "--batch", &batch.to_string()])
        .args(["--repeats", &opts.repeats.max(1).to_string(), "--device", &opts.peer_device]);
    if precision == PeerPrecision::F16 {
        command.arg("--half");
    }
    let out = command.output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(err.lines().last().unwrap_or("failed").to_owned());
    }
    let mut env = serde_json::Value::Null;
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if v["event"] == "env" {
            env = v;
        } else if v["event"] == "result" {
            let num = |x: &serde_json::Value, k: &str| x[k].as_f64().ok_or_else(|| format!("no {k} in {x}"));
            return Ok(EncodeMeasurement {
                set: set.name.clone(),
                tool: v["impl"].as_str().unwrap_or("peer").to_owned(),
                documents: num(&env, "documents")? as usize,
                tokens: num(&env, "tokens")? as usize,
                median_s: num(&v, "median_s")?,
                peak_mb: v["peak_rss_mb"].as_f64(),
                runs: v["times"].as_array().map_or(0, |t| t.len()),
            });
        }
    }
    Err("no result line".into())
}

/// The measurements as a Markdown table, with embjob's throughput over each tool's on the same set.
pub fn encode_table(ms: &[EncodeMeasurement]) -> String {
    let mut s = String::from(
        "| text set | tool | runs | documents | tokens | median s | documents/s | tokens/s | peak RSS MB | embjob / tool |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for m in ms {
        let ours = ms.iter().find(|e| e.set == m.set && e.tool.starts_with("embjob"));
        let ratio = ours.map(|e| format!("{:.2}×", e.tokens_per_s() / m.tokens_per_s())).unwrap_or_default();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.1} | {:.0} | {} | {} |\n",
            m.set,
            m.tool,
            m.runs,
            m.documents,
            m.tokens,
            m.median_s,
            m.documents as f64 / m.median_s,
            m.tokens_per_s(),
            m.peak_mb.map_or("—".to_owned(), |p| format!("{p:.0}")),
            ratio
        ));
    }
    s
}
