//! The `embjob` command line: parses arguments, shows progress, prints errors once and picks the exit code.
//! The library does the work.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Parser, Subcommand};
use embjob::error::exit_code;
use embjob::plan::config::BackendChoice;
use embjob::{Overrides, Reporter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Parser)]
#[command(name = "embjob", version, about = "Turn tables into embeddings: bag-of-words, PCA and embedding models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: read the input, compute every configured stage, write the outputs under <output.dir>/latest.
    Run {
        /// The pipeline file (TOML).
        config: PathBuf,
        #[command(flatten)]
        common: Common,
        /// No progress bars and no stage summaries; errors are still printed.
        #[arg(long, short)]
        quiet: bool,
        /// Run one shard of a text job, INDEX/COUNT (0-based, e.g. 3/64): its share of the input files, written
        /// under <output.dir>/shards/; `embjob merge` then makes the run from all COUNT shards.
        #[arg(long, value_name = "INDEX/COUNT", value_parser = embjob::job::shard::ShardSpec::parse)]
        shard: Option<embjob::job::shard::ShardSpec>,
    },
    /// Merge the shards of a text job (`run --shard`): check them, build the vocabulary, fit PCA and evaluate on
    /// all of them, and commit a normal run under <output.dir>/latest.
    Merge {
        /// The pipeline file (TOML) the shards ran.
        config: PathBuf,
        #[command(flatten)]
        common: Common,
        /// No progress bars and no stage summaries; errors are still printed.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check a pipeline file without running it; lists every problem with its key path.
    Validate {
        /// The pipeline file (TOML).
        config: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// A finished run in the terminal: stages, key metrics, the model against popularity, files.
    Show {
        /// A run folder, or an output folder (its `latest` run).
        run: PathBuf,
    },
    /// The nearest items (or documents, rows, tokens) of one, by cosine, in an embedding table of a run.
    Neighbors {
        /// A run folder, or an output folder (its `latest` run).
        run: PathBuf,
        /// The item, or the row id (documents, pca), or the word (tokens).
        key: String,
        /// How many.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Which table: items, documents, pca, tokens (default: the first the run has, in that order).
        #[arg(long)]
        table: Option<String>,
    },
    /// Benchmarks (release builds on a quiet machine): `embjob bench pca`.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Write a seeded synthetic catalogue (Zipf item popularity) as a long-layout Parquet file: user_id, item, rank.
    GenCatalogue {
        #[arg(long)]
        items: usize,
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        per_user: usize,
        #[arg(long, default_value_t = 17)]
        seed: u64,
        /// The Parquet file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the seeded synthetic food data set (favourites and item labels) that pipelines/food.toml uses.
    GenFood {
        /// Folder to write `food_favorites.csv`, `food_items.csv` and `food_pairs.csv` into.
        #[arg(long, default_value = "pipelines/data")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// PCA on lee_docs and three generated Zipf shapes (short texts, documents, users × items), next to
    /// scikit-learn's arpack when Python has it.
    Pca {
        /// Fits per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// lee_docs.parquet; default: ../shared/data/lee_docs.parquet, else tests/fixtures/lee_docs.parquet.
        #[arg(long)]
        lee: Option<PathBuf>,
        /// Workloads to run (lee, short, docs, users; repeatable); default all.
        #[arg(long)]
        only: Vec<String>,
        /// Python with scikit-learn and scipy for the peer; "none" skips it.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Which backend fits embjob's PCA.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: CliBackend,
        /// cuda adds torch.pca_lowrank on the GPU (same algorithm, oversampling and power iterations as embjob's
        /// randomized solver) next to scikit-learn.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        peer_device: String,
    },
    /// Training throughput of a pipeline's model (default: MovieLens, the peer's settings) next to the PyTorch peer.
    Train {
        #[arg(long, default_value = "pipelines/movielens.toml")]
        config: PathBuf,
        /// Training runs (model seeds 0, 1, ...); the median time is reported.
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Python with torch for the peer; "none" skips it.
        #[arg(long, default_value = "python3")]
        python: String,
        /// The peer script.
        #[arg(long, default_value = "../shared/peers/ref_recommender.py")]
        peer: PathBuf,
        /// Where the peer trains.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        peer_device: String,
        /// Which backend trains.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: CliBackend,
    },
    /// Contextual fine-tuning throughput and memory on MovieLens title pairs, next to sentence-transformers.
    Finetune {
        /// The starting model folder; default: $EMBJOB_MODEL_DIR, else models/all-MiniLM-L6-v2.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Parquet with movieId, title, genres.
        #[arg(long, default_value = "pipelines/data/movielens_titles.parquet")]
        titles: PathBuf,
        /// Training steps timed (each a batch of pairs).
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Pairs per step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Timed runs per tool from the starting weights (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Longest text in tokens.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Which backend trains.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: CliBackend,
        /// Python with torch and sentence-transformers for the peer; "none" skips it.
        #[arg(long, default_value = "python3")]
        python: String,
        #[arg(long, default_value = "scripts/peers/st_finetune.py")]
        peer: PathBuf,
        /// Where the peer trains.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        peer_device: String,
    },
    /// Contextual encoding throughput of a model folder on real text, next to sentence-transformers and ONNX Runtime.
    Encode {
        /// The model folder; default: $EMBJOB_MODEL_DIR, else models/all-MiniLM-L6-v2.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Text sets as NAME=PARQUET:COLUMN, or NAME=PARQUET:COLUMN*N for the column N times over (repeatable);
        /// default: the Lee corpus (300 news documents), on the GPU also the long set (Lee × 20, about 1.2 million
        /// tokens), and the 9,066 MovieLens titles from ../shared/data (Lee from pipelines/data without ../shared).
        #[arg(long = "text")]
        texts: Vec<String>,
        /// Timed passes per tool and set, after one warm-up (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// embjob's padded tokens per batch (contextual.batch_tokens).
        #[arg(long, default_value_t = 8192)]
        batch_tokens: u64,
        /// Which backend encodes.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: CliBackend,
        /// Python with sentence-transformers and onnxruntime for the peers; "none" skips them.
        #[arg(long, default_value = "python3")]
        python: String,
        #[arg(long, default_value = "scripts/peers/st_encode.py")]
        st_peer: PathBuf,
        #[arg(long, default_value = "scripts/peers/ort_encode.py")]
        ort_peer: PathBuf,
        /// Where the peers run.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        peer_device: String,
        /// Documents per peer batch, each measured; default 32 on the CPU, 128,512 on CUDA.
        #[arg(long, value_delimiter = ',')]
        peer_batch: Vec<usize>,
        /// sentence-transformers' precisions (f32, f16), each measured; default f32 on the CPU, f32,f16 on CUDA.
        #[arg(long, value_delimiter = ',', value_parser = ["f32", "f16"])]
        peer_precision: Vec<String>,
        /// embjob's `contextual.precision`.
        #[arg(long, value_enum, default_value = "auto")]
        precision: CliPrecision,
    },
    /// Cosine nearest neighbours of every item among seeded random vectors, on the CPU and hardware GPUs.
    Neighbors {
        #[arg(long, default_value_t = 100_000)]
        items: usize,
        #[arg(long, default_value_t = 32)]
        dim: usize,
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// Training and held-out ranking cost against the catalogue size (generated Zipf catalogues), full softmax
    /// against sampled.
    Catalogue {
        /// Which backend trains.
        #[arg(long, value_enum, default_value = "cpu")]
        backend: CliBackend,
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        items: Vec<usize>,
        #[arg(long, default_value_t = 20_000)]
        users: usize,
        #[arg(long, default_value_t = 10)]
        per_user: usize,
        #[arg(long, default_value_t = 1000)]
        negatives: usize,
        /// Timed training steps (batch 256) per measurement.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Held-out examples ranked over all items per measurement.
        #[arg(long, default_value_t = 512)]
        eval_examples: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// The encoder cache's lookup at scale (a generated corpus of tweet-length texts, cached once under --dir)
    /// next to the CPU encoding the new texts that the cache does not hold.
    Cache {
        /// Cached documents.
        #[arg(long, default_value_t = 10_000_000)]
        entries: usize,
        /// Segments they are cached in (at most 16 stay uncompacted).
        #[arg(long, default_value_t = 10)]
        segments: usize,
        /// Vector dimension (all-MiniLM-L6-v2's is 384).
        #[arg(long, default_value_t = 384)]
        dim: usize,
        /// New texts appended to the cached ones, in percent of them.
        #[arg(long, default_value_t = 1.0)]
        new_percent: f64,
        /// Where the generated cache is kept between runs (about 15 GB at the defaults).
        #[arg(long, default_value = "target/bench-cache")]
        dir: PathBuf,
        /// lee_docs.parquet, whose words the texts are made of; default as bench pca.
        #[arg(long)]
        lee: Option<PathBuf>,
        /// The model whose CPU encoding is the yardstick; default as bench encode; "none" skips it.
        #[arg(long)]
        model: Option<PathBuf>,
        /// New texts encoded to measure the CPU's rate.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        /// Timed lookups (the median is reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
    },
    /// GEMM GFLOP/s on the CPU backend and on every GPU adapter (software ones included).
    Gemm {
        #[arg(long, value_delimiter = ',', default_value = "256,512,1024")]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        /// Python with torch for the peer (CPU, and cuBLAS when CUDA is there); "none" skips it.
        #[arg(long, default_value = "python3")]
        python: String,
        /// Skips the CPU backend (GPU adapters and the peer only).
        #[arg(long)]
        no_cpu: bool,
    },
}

/// `bench encode --precision` (the config's `contextual.precision` values).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliPrecision {
    /// f16 on tensor cores where the adapter has them, else f32.
    Auto,
    F32,
    F16,
}

impl From<CliPrecision> for embjob::encoder::PrecisionChoice {
    fn from(p: CliPrecision) -> embjob::encoder::PrecisionChoice {
        match p {
            CliPrecision::Auto => embjob::encoder::PrecisionChoice::Auto,
            CliPrecision::F32 => embjob::encoder::PrecisionChoice::F32,
            CliPrecision::F16 => embjob::encoder::PrecisionChoice::F16,
        }
    }
}

/// `--backend` (the config's `job.backend` values; the config layer knows nothing of clap).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CliBackend {
    /// A hardware GPU when there is one, otherwise the CPU (with a one-line notice).
    Auto,
    Cpu,
    Gpu,
}

impl From<CliBackend> for BackendChoice {
    fn from(b: CliBackend) -> BackendChoice {
        match b {
            CliBackend::Auto => BackendChoice::Auto,
            CliBackend::Cpu => BackendChoice::Cpu,
            CliBackend::Gpu => BackendChoice::Gpu,
        }
    }
}

#[derive(clap::Args)]
struct Common {
    /// Overrides `job.backend`.
    #[arg(long, value_enum)]
    backend: Option<CliBackend>,
    /// Overrides `output.dir` (relative to the current folder).
    #[arg(long)]
    output: Option<PathBuf>,
    /// This run neither reads nor writes the encoder cache (`contextual.cache = false` for one run).
    #[arg(long)]
    no_cache: bool,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            backend: self.backend.map(BackendChoice::from),
            output_dir: self.output.clone(),
            no_cache: self.no_cache,
        }
    }
}

/// Progress bars on a terminal; one summary line per stage either way (unless quiet).
struct CliReporter {
    quiet: bool,
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl CliReporter {
    fn new(quiet: bool) -> CliReporter {
        CliReporter { quiet, bars: !quiet && std::io::stderr().is_terminal(), bar: Mutex::new(None) }
    }
}

impl Reporter for CliReporter {
    fn stage_started(&self, stage: &str, total: Option<u64>) {
        if !self.bars {
            return;
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed}, ETA {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{prefix:>8} {spinner} {msg} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar.set_prefix(stage.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn progress(&self, done: u64, message: &str) {
        if let Ok(slot) = self.bar.lock() {
            if let Some(bar) = slot.as_ref() {
                bar.set_position(done);
                bar.set_message(message.to_owned());
            }
        }
    }

    fn stage_finished(&self, stage: &str, summary: &str, seconds: f64) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        }
        if !self.quiet {
            eprintln!("{stage:>8}: {summary} ({seconds:.2} s)");
        }
    }

    fn notice(&self, message: &str) {
        if !self.quiet {
            eprintln!("  notice: {message}");
        }
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit_code::CONFIG } else { exit_code::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    // SIGINT / SIGTERM stop the run between steps; its staging folder is removed (exit 130 / 143).
    embjob::runtime::interrupt::install_handlers();
    if let Err(e) = dispatch(cli.command) {
        eprintln!("error: {e:#}");
        std::process::exit(e.exit_code());
    }
}

/// One command, carried out by the library; what it prints.
fn dispatch(command: Command) -> embjob::Result<()> {
    match command {
        Command::Run { config, common, quiet, shard: Some(spec) } => {
            let reporter = CliReporter::new(quiet);
            let s = embjob::run_shard(&config, &common.overrides(), spec, &reporter)?;
            if !quiet {
                let dir = s.dir.display();
                eprintln!("{:>8}: shard {} ({} files, {} rows) -> {dir}", "done", s.spec, s.files, s.rows);
            }
            Ok(())
        }
        Command::Run { config, common, quiet, shard: None } => {
            let reporter = CliReporter::new(quiet);
            embjob::run(&config, &common.overrides(), &reporter).map(|s| summarize(&s, quiet))
        }
        Command::Merge { config, common, quiet } => {
            let reporter = CliReporter::new(quiet);
            embjob::merge(&config, &common.overrides(), &reporter).map(|s| summarize(&s, quiet))
        }
        Command::Show { run } => embjob::view::inspect::show(&run).map(|s| print!("{s}")),
        Command::Neighbors { run, key, k, table } => {
            embjob::view::inspect::neighbors(&run, &key, k, table.as_deref()).map(|s| print!("{s}"))
        }
        Command::Validate { config, common } => embjob::validate(&config, &common.overrides()).map(|plan| {
            println!("{}: ok (job '{}', output {})", config.display(), plan.job_name, plan.output_dir.display());
        }),
        Command::Bench { which } => bench(which),
        Command::GenCatalogue { items, users, per_user, seed, out } => {
            let spec = embjob::tools::catalogue::CatalogueSpec { items, users, per_user, exponent: 1.0, seed };
            spec.check()?;
            embjob::data::write_parquet(&embjob::tools::catalogue::table(&spec), &out)?;
            println!("wrote {} ({users} users × {per_user} of {items} items)", out.display());
            Ok(())
        }
        Command::GenFood { out } => embjob::tools::foodgen::write_files(&out).map(|files| {
            for f in files {
                println!("wrote {}", f.display());
            }
        }),
    }
}

/// `embjob bench …`: the benchmark's table on stdout, its log on stderr.
fn bench(which: Bench) -> embjob::Result<()> {
    use embjob::tools::bench;
    let python = |p: String| (p != "none").then_some(p);
    let log = &mut std::io::stderr();
    match which {
        Bench::Pca { repeats, lee, only, python: py, backend, peer_device } => {
            let opts = bench::PcaBenchOptions {
                repeats: repeats.max(1),
                lee: bench::lee_path(lee),
                only,
                python: python(py),
                backend: backend.into(),
                peer_device,
            };
            bench::pca(&opts, log).map(|ms| print!("{}", bench::table(&ms)))
        }
        Bench::Gemm { sizes, repeats, python: py, no_cpu } => {
            bench::gemm(&sizes, repeats, python(py).as_deref(), !no_cpu, log).map(|t| print!("{t}"))
        }
        Bench::Neighbors { items, dim, k, repeats } => {
            bench::neighbors(items, dim, k, repeats, log).map(|t| print!("{t}"))
        }
        Bench::Train { config, repeats, python: py, peer, peer_device, backend } => {
            let (python, backend) = (python(py), backend.into());
            let opts = bench::TrainBenchOptions { config, repeats, python, peer_script: peer, peer_device, backend };
            bench::train(&opts, log).map(|ms| print!("{}", bench::train_table(&ms)))
        }
        Bench::Encode {
            model,
            texts,
            repeats,
            batch_tokens,
            backend,
            python: py,
            st_peer,
            ort_peer,
            peer_device,
            peer_batch,
            peer_precision,
            precision,
        } => {
            let (peer_batches, peer_precisions) = peer_runs(peer_batch, &peer_precision, peer_device == "cuda");
            let opts = bench::EncodeBenchOptions {
                model: bench::model_path(model),
                sets: bench::text_sets(&texts, matches!(backend, CliBackend::Gpu))?,
                repeats,
                batch_tokens,
                backend: backend.into(),
                python: python(py),
                st_script: st_peer,
                ort_script: ort_peer,
                peer_device,
                peer_batches,
                peer_precisions,
                precision: precision.into(),
            };
            bench::encode(&opts, log).map(|ms| print!("{}", bench::encode_table(&ms)))
        }
        which @ Bench::Finetune { .. } => bench_finetune(which, log),
        which @ Bench::Cache { .. } => bench_cache(which, log),
        Bench::Catalogue { backend, items, users, per_user, negatives, steps, eval_examples, repeats } => {
            let backend = backend.into();
            let opts = bench::CatalogueBenchOptions {
                items,
                users,
                per_user,
                negatives,
                steps,
                eval_examples,
                repeats,
                backend,
            };
            bench::catalogue(&opts, log).map(|ms| print!("{}", bench::catalogue_table(&ms)))
        }
    }
}

/// `embjob bench cache`.
fn bench_finetune(which: Bench, log: &mut dyn std::io::Write) -> embjob::Result<()> {
    use embjob::tools::bench;
    let Bench::Finetune { model, titles, steps, batch, repeats, max_tokens, backend, python, peer, peer_device } =
        which
    else {
        return Ok(());
    };
    let opts = bench::FinetuneBenchOptions {
        model: bench::model_path(model),
        titles,
        steps,
        batch,
        repeats,
        max_tokens,
        backend: backend.into(),
        python: (python != "none").then_some(python),
        peer_script: peer,
        peer_device,
    };
    bench::finetune(&opts, log).map(|ms| print!("{}", bench::finetune_table(&ms)))
}

fn bench_cache(which: Bench, log: &mut dyn std::io::Write) -> embjob::Result<()> {
    use embjob::tools::bench;
    let Bench::Cache { entries, segments, dim, new_percent, dir, lee, model, sample, repeats } = which else {
        return Ok(());
    };
    let model = match model {
        Some(m) if m.as_os_str() == "none" => None,
        m => Some(bench::model_path(m)),
    };
    let opts = bench::CacheBenchOptions {
        entries,
        segments,
        dim,
        new_percent,
        dir,
        lee: bench::lee_path(lee),
        model,
        sample,
        repeats,
    };
    bench::cache(&opts, log).map(|b| print!("{}", bench::cache_table(&b)))
}

/// `bench encode`'s peer batches and precisions: as given, else 32 in f32 on the CPU, and 128 and 512 in f32 and f16
/// on CUDA.
fn peer_runs(
    batches: Vec<usize>,
    precisions: &[String],
    cuda: bool,
) -> (Vec<usize>, Vec<embjob::tools::bench::PeerPrecision>) {
    use embjob::tools::bench::PeerPrecision;
    let batches = match (batches.is_empty(), cuda) {
        (false, _) => batches,
        (true, false) => vec![32],
        (true, true) => vec![128, 512],
    };
    let precisions = match (precisions.is_empty(), cuda) {
        (true, false) => vec![PeerPrecision::F32],
        (true, true) => vec![PeerPrecision::F32, PeerPrecision::F16],
        (false, _) => {
            precisions.iter().map(|p| if p == "f16" { PeerPrecision::F16 } else { PeerPrecision::F32 }).collect()
        }
    };
    (batches, precisions)
}

/// The closing lines of a run: the vectors it made and where it is.
fn summarize(s: &embjob::RunSummary, quiet: bool) {
    if !quiet {
        let dims = s.vector_dims();
        if !dims.is_empty() {
            eprintln!("{:>8}: {}", "vectors", dims.join(", "));
        }
        eprintln!("{:>8}: run {} -> {}", "done", s.run_id, s.run_dir.display());
    }
}
