//! `embjob bench finetune`: contrastive fine-tuning throughput (pairs/s, tokens/s) and peak memory of a model folder
//! on MovieLens title pairs (two titles of one genre set, drawn as the finetune stage draws them), embjob next to
//! sentence-transformers (PyTorch; scripts/peers/st_finetune.py) on the same batches in the same order, run in
//! turns in the same command. Both time every step from the starting weights, tokenizing included, dropout off.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use super::{median, reset_peak_rss};
use crate::data::input::{Format, LabelsFile};
use crate::data::table::{ColumnData, Table};
use crate::encoder::{ModelFolder, TextTokenizer, Tokens, WeightsFile};
use crate::error::Result;
use crate::finetune::{label_batches, ContrastiveParams, ContrastiveTrainer, OptimizerParams};
use crate::plan::config::BackendChoice;

/// Options of `embjob bench finetune`.
#[derive(Debug, Clone)]
pub struct FinetuneBenchOptions {
    pub model: PathBuf,
    /// Parquet with movieId, title, genres.
    pub titles: PathBuf,
    pub steps: usize,
    pub batch: usize,
    pub repeats: usize,
    pub max_tokens: usize,
    pub backend: BackendChoice,
    pub python: Option<String>,
    pub peer_script: PathBuf,
    pub peer_device: String,
}

/// One tool's figures.
#[derive(Debug, Clone)]
pub struct FinetuneMeasurement {
    pub tool: String,
    pub median_s: f64,
    pub pairs_per_s: f64,
    pub tokens_per_s: f64,
    pub peak_mb: f64,
    pub first_loss: f64,
    pub last_loss: f64,
}

/// The titles and their genre sets, by movieId.
fn titles(path: &std::path::Path) -> Result<(Vec<String>, Vec<u32>)> {
    let read = |category: &str| {
        crate::data::read_labels(&LabelsFile {
            path: path.to_owned(),
            format: Format::Parquet,
            item: "movieId".into(),
            category: category.into(),
        })
    };
    let (title, genres) = (read("title")?, read("genres")?);
    let mut ids: Vec<&String> = title.keys().collect();
    ids.sort_by_key(|id| id.parse::<i64>().unwrap_or(i64::MAX));
    let mut names: Vec<&String> = genres.values().collect();
    names.sort();
    names.dedup();
    let cat = |id: &String| names.binary_search(&&genres[id]).unwrap_or(0) as u32;
    Ok((ids.iter().map(|id| title[*id].clone()).collect(), ids.iter().map(|id| cat(id)).collect()))
}

pub fn finetune(opts: &FinetuneBenchOptions, log: &mut dyn Write) -> Result<Vec<FinetuneMeasurement>> {
    let folder = ModelFolder::open(&opts.model)?;
    let (texts, cats) = titles(&opts.titles)?;
    let docs: Vec<usize> = (0..texts.len()).collect();
    let mut batches = label_batches(&docs, &cats, 1, opts.batch, 7);
    batches.truncate(opts.steps);
    let pairs: usize = batches.iter().map(Vec::len).sum();
    let tokenizer = TextTokenizer::open(&folder.tokenizer_file(), opts.max_tokens)?;
    let tokens_of = |i: usize| tokenizer.encode(&texts[i]).map(|t| t.ids.len());
    let tokens: usize =
        batches.iter().flatten().map(|e| Ok(tokens_of(e.anchor)? + tokens_of(e.positive)?)).sum::<Result<usize>>()?;
    let _ = writeln!(
        log,
        "{} steps of {} pairs ({pairs} pairs, {tokens} tokens) from {}",
        batches.len(),
        opts.batch,
        opts.titles.display()
    );
    let pairs_file = std::env::temp_dir().join(format!("embjob-bench-finetune-{}.parquet", std::process::id()));
    let step: Vec<i64> = batches.iter().enumerate().flat_map(|(s, b)| std::iter::repeat_n(s as i64, b.len())).collect();
    let table = Table::new(vec![
        ("step", ColumnData::I64(step)),
        ("anchor", ColumnData::Str(batches.iter().flatten().map(|e| texts[e.anchor].clone()).collect())),
        ("positive", ColumnData::Str(batches.iter().flatten().map(|e| texts[e.positive].clone()).collect())),
    ]);
    crate::data::write_parquet(&table, &pairs_file)?;
    let (be, report) = crate::backend::open(opts.backend)?;
    let _ = writeln!(log, "embjob on {}", report.used);
    let weights = WeightsFile::open(&folder.weights_file())?;
    let mut out = Vec::new();
    let (mut times, losses) = embjob_runs(opts, be.as_ref(), (&folder, &weights, &tokenizer), (&texts, &batches), log)?;
    if let Some(profile) = be.profile_report() {
        let _ = writeln!(log, "GPU kernel times (every run):\n{profile}");
    }
    let s = median(&mut times);
    out.push(FinetuneMeasurement {
        tool: format!("embjob ({})", report.used),
        median_s: s,
        pairs_per_s: pairs as f64 / s,
        tokens_per_s: tokens as f64 / s,
        peak_mb: crate::runtime::memory::peak_rss_mb(),
        first_loss: losses.0,
        last_loss: losses.1,
    });
    if let Some(py) = &opts.python {
        match peer(py, opts, &pairs_file) {
            Some(m) => out.push(m),
            None => {
                let _ = writeln!(log, "(peer unavailable: {py} {} did not run)", opts.peer_script.display());
            }
        }
    }
    let _ = std::fs::remove_file(&pairs_file);
    Ok(out)
}

/// embjob's timed runs: each run's seconds, and the last run's first and last loss.
fn embjob_runs(
    opts: &FinetuneBenchOptions,
    be: &dyn crate::backend::Backend,
    (folder, weights, tokenizer): (&ModelFolder, &WeightsFile, &TextTokenizer),
    (texts, batches): (&[String], &[Vec<crate::finetune::Example>]),
    log: &mut dyn Write,
) -> Result<(Vec<f64>, (f64, f64))> {
    let (mut times, mut losses) = (Vec::new(), (f64::NAN, f64::NAN));
    let pairs: usize = batches.iter().map(Vec::len).sum();
    reset_peak_rss();
    for r in 0..opts.repeats.max(1) {
        let sequences = 2 * opts.batch;
        let opt = OptimizerParams::default();
        let mut t = ContrastiveTrainer::new(
            be,
            folder.config.clone(),
            weights,
            opt,
            ContrastiveParams { scale: 20.0 },
            folder.pooling.unwrap_or(crate::backend::PoolMode::Mean),
            sequences,
            batches.len(),
        )?;
        let start = Instant::now();
        let mut first = f64::NAN;
        let mut last = f64::NAN;
        let (mut rows, mut tokens) = (0usize, 0usize);
        for b in batches {
            let enc = |i: usize| tokenizer.encode(&texts[i]);
            let anchors: Vec<Tokens> = b.iter().map(|e| enc(e.anchor)).collect::<Result<_>>()?;
            let positives: Vec<Tokens> = b.iter().map(|e| enc(e.positive)).collect::<Result<_>>()?;
            let s = t.step(&anchors, &positives)?;
            (rows, tokens) = (rows + s.rows, tokens + s.tokens);
            if first.is_nan() {
                first = s.loss;
            }
            last = s.loss;
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = writeln!(
            log,
            "embjob run {r}: {secs:.2} s, {:.1} pairs/s, loss {first:.4} → {last:.4}; dense layers on {tokens} \
             tokens, attention on {rows} padded rows ({:.0} % padding)",
            pairs as f64 / secs,
            100.0 * (1.0 - tokens as f64 / rows.max(1) as f64)
        );
        times.push(secs);
        losses = (first, last);
    }
    Ok((times, losses))
}

fn peer(py: &str, opts: &FinetuneBenchOptions, pairs: &std::path::Path) -> Option<FinetuneMeasurement> {
    let out = Command::new(py)
        .arg(&opts.peer_script)
        .args(["--model", opts.model.to_str()?, "--pairs", pairs.to_str()?, "--device", &opts.peer_device])
        .args(["--repeats", &opts.repeats.to_string(), "--max-tokens", &opts.max_tokens.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let result: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "result")?;
    let f = |k: &str| result[k].as_f64().unwrap_or(f64::NAN);
    let peak = if opts.peer_device == "cuda" { f("peak_gpu_mb") } else { f("peak_rss_mb") };
    Some(FinetuneMeasurement {
        tool: format!("sentence-transformers ({})", opts.peer_device),
        median_s: f("median_s"),
        pairs_per_s: f("pairs_per_s"),
        tokens_per_s: f("tokens_per_s"),
        peak_mb: peak,
        first_loss: f("first_loss"),
        last_loss: f("last_loss"),
    })
}

/// The measurements as a Markdown table, each peer's ratio against embjob.
pub fn finetune_table(ms: &[FinetuneMeasurement]) -> String {
    let mut s = String::from(
        "| tool | median s | pairs/s | tokens/s | peak MB | loss first → last | embjob pairs/s ÷ tool's |\n|---|---|---|---|---|---|---|\n",
    );
    let ours = ms.first().map_or(f64::NAN, |m| m.pairs_per_s);
    for m in ms {
        s.push_str(&format!(
            "| {} | {:.2} | {:.1} | {:.0} | {:.0} | {:.4} → {:.4} | {:.2} |\n",
            m.tool,
            m.median_s,
            m.pairs_per_s,
            m.tokens_per_s,
            m.peak_mb,
            m.first_loss,
            m.last_loss,
            ours / m.pairs_per_s
        ));
    }
    s
}
