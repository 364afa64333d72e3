//! The benchmarks, each next to a peer run in the same command when Python has it. Benchmarks, not tests: run them
//! on a quiet machine with a release build; they report medians over repeats.
//!
//! * `embjob bench pca`: PCA fits (wall time, peak memory) on lee_docs and three generated Zipf shapes
//!   ([`PCA_SHAPES`]: short texts, documents, users × items), next to scikit-learn's best sparse solver (arpack) on
//!   the same matrices;
//! * `embjob bench train`: training throughput and LOO recall of a pipeline's model (default: MovieLens with the
//!   peer's settings), next to the PyTorch peer (CPU, or CUDA with `--peer-device cuda`), the two in turns seed by
//!   seed, with the median of the paired ratios;
//! * `embjob bench gemm`: GEMM GFLOP/s on the CPU backend and on every GPU adapter, next to PyTorch;
//! * `embjob bench catalogue` (`catalogue.rs`): training and held-out ranking cost against the catalogue size
//!   (generated Zipf catalogues of 10^4–10^6 items), full softmax against sampled;
//! * `embjob bench encode` (`encode.rs`): contextual encoding throughput of a model folder on real text, next to
//!   sentence-transformers and ONNX Runtime;
//! * `embjob bench cache` (`cache.rs`): the encoder cache's lookup at 10^7 cached documents (time, memory per
//!   document) next to the CPU encoding the new ones it saves.

mod cache;
mod catalogue;
mod encode;

pub use cache::{cache, cache_table, CacheBench, CacheBenchOptions, CacheMeasurement};
pub use catalogue::{catalogue, catalogue_table, CatalogueBenchOptions, CatalogueMeasurement};
mod finetune;
pub use encode::{encode, encode_table, EncodeBenchOptions, EncodeMeasurement, PeerPrecision, TextSet};
pub use finetune::{finetune, finetune_table, FinetuneBenchOptions, FinetuneMeasurement};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::backend::ops::*;
use crate::data::dataset::Dataset;
use crate::error::{Error, Result};
use crate::linalg::rng::SplitMix;
use crate::linalg::sparse::Csr;
use crate::pca::{self, PcaInput};
use crate::plan::config::{ComponentsSpec, DfBound, Format, PcaSolver, Weighting, DEFAULT_TOKEN_PATTERN};
use crate::plan::{InputColumns, InputSpec, PcaPlan};
use crate::text::vectorizer::BowParams;

/// Options of `embjob bench pca`.
#[derive(Debug, Clone)]
pub struct PcaBenchOptions {
    pub repeats: usize,
    /// lee_docs.parquet (from the team's shared/data or the test fixtures).
    pub lee: PathBuf,
    /// Workloads to run by name (`lee` and the [`PCA_SHAPES`]); empty runs all.
    pub only: Vec<String>,
    /// Python interpreter for the peers; `None` skips them.
    pub python: Option<String>,
    /// Which backend fits embjob's PCA.
    pub backend: crate::plan::config::BackendChoice,
    /// `cuda` adds `torch.pca_lowrank` on the GPU (the randomized solver's algorithm with embjob's oversampling and
    /// power iterations) next to scikit-learn's arpack on the CPU.
    pub peer_device: String,
}

/// A generated sparse workload: `docs` rows of `min_len..=max_len` tokens drawn from a Zipf(1.1) vocabulary of
/// `terms` terms, counted (or 1 when `binary`), and the components fitted.
#[derive(Debug, Clone, Copy)]
pub struct ZipfShape {
    pub name: &'static str,
    pub docs: usize,
    pub terms: usize,
    pub min_len: usize,
    pub max_len: usize,
    pub binary: bool,
    pub k: usize,
}

/// The generated workloads of `bench pca` (issue 15's shapes): short texts (about 16 non-zeros per row, more
/// terms than documents), longer documents, and a long binary user × item matrix.
pub const PCA_SHAPES: [ZipfShape; 3] = [
    ZipfShape { name: "short", docs: 20_000, terms: 25_000, min_len: 10, max_len: 24, binary: false, k: 10 },
    ZipfShape { name: "docs", docs: 20_000, terms: 20_000, min_len: 50, max_len: 150, binary: false, k: 10 },
    ZipfShape { name: "users", docs: 500_000, terms: 20_000, min_len: 6, max_len: 16, binary: true, k: 16 },
];

/// One measured fit.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub tool: String,
    pub workload: String,
    pub solver: String,
    pub median_s: f64,
    pub peak_mb: f64,
    pub evr_sum: f64,
}

/// A seeded sparse matrix of the given shape (see [`ZipfShape`]).
pub fn zipf_matrix(shape: &ZipfShape, seed: u64) -> Csr {
    let mut rng = SplitMix::new(seed);
    let terms = shape.terms;
    let mut cdf = Vec::with_capacity(terms);
    let mut acc = 0.0;
    for r in 0..terms {
        acc += 1.0 / ((r + 1) as f64).powf(1.1);
        cdf.push(acc);
    }
    let span = shape.max_len.saturating_sub(shape.min_len) + 1;
    let rows: Vec<Vec<(u32, f64)>> = (0..shape.docs)
        .map(|_| {
            let len = shape.min_len + rng.below(span);
            let mut toks: Vec<u32> = (0..len)
                .map(|_| {
                    let u = rng.next_f64() * acc;
                    cdf.partition_point(|&c| c < u).min(terms - 1) as u32
                })
                .collect();
            toks.sort_unstable();
            let mut row: Vec<(u32, f64)> = Vec::new();
            for t in toks {
                match row.last_mut() {
                    Some((last, c)) if *last == t => *c += if shape.binary { 0.0 } else { 1.0 },
                    _ => row.push((t, 1.0)),
                }
            }
            row
        })
        .collect();
    Csr::from_rows(terms, &rows)
}

/// Resets the peak-RSS counter (Linux ≥ 4.0: writing 5 to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn measure(
    be: &dyn crate::backend::Backend,
    tool: &str,
    (workload, x, k): (&str, &Csr, usize),
    solver: PcaSolver,
    repeats: usize,
) -> Result<Measurement> {
    let plan = PcaPlan {
        n_components: ComponentsSpec::Count(k as u64),
        whiten: false,
        standardize: false,
        solver,
        oversamples: 10,
        power_iterations: None,
    }
    .resolve(x.rows, x.cols)?;
    let mut times = Vec::with_capacity(repeats);
    let mut peak: f64 = 0.0;
    let mut evr_sum = 0.0;
    let mut solver_name = String::new();
    for _ in 0..repeats {
        let input = PcaInput::Sparse(x.clone());
        reset_peak_rss();
        let before = crate::runtime::memory::peak_rss_mb();
        let t = Instant::now();
        let r = pca::fit(be, input, &plan, 0)?;
        times.push(t.elapsed().as_secs_f64());
        peak = peak.max(crate::runtime::memory::peak_rss_mb() - before);
        evr_sum = r.explained_variance_ratio.iter().sum();
        solver_name = format!("{:?}", r.solver).to_lowercase();
    }
    Ok(Measurement {
        tool: tool.into(),
        workload: workload.into(),
        solver: solver_name,
        median_s: median(&mut times),
        peak_mb: peak,
        evr_sum,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// The scikit-learn peer: loads the CSR arrays, fits PCA with the given solver `repeats` times, prints JSON.
const PEER: &str = r#"
import json, resource, sys, time
import numpy as np, scipy.sparse as sp
from sklearn.decomposition import PCA
d, k, repeats, solver = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
shape = tuple(np.fromfile(d + "/shape", dtype=np.int64))
X = sp.csr_matrix((np.fromfile(d + "/data", dtype=np.float64), np.fromfile(d + "/indices", dtype=np.int32),
                   np.fromfile(d + "/indptr", dtype=np.int64)), shape=shape)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
ts = []
for _ in range(repeats):
    t = time.perf_counter()
    p = PCA(n_components=k, svd_solver=solver, random_state=0).fit(X)
    ts.append(time.perf_counter() - t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"median_s": float(np.median(ts)), "peak_mb": peak, "peak_over_load_mb": peak - base,
                  "evr_sum": float(p.explained_variance_ratio_.sum())}))
"#;

/// The PyTorch peer on CUDA: `torch.pca_lowrank` (randomized range finder and SVD, the algorithm of embjob's
/// randomized solver) with embjob's oversampling (q = k + 10) and power iterations (7), on the sparse matrix centred
/// implicitly. Timed from the CSR arrays in host memory to the components back in host memory, as embjob's fit is.
const PEER_TORCH: &str = r#"
import json, sys, time
import numpy as np, torch
d, k, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n, p = (int(v) for v in np.fromfile(d + "/shape", dtype=np.int64))
values = torch.from_numpy(np.fromfile(d + "/data", dtype=np.float64).astype(np.float32))
cols = torch.from_numpy(np.fromfile(d + "/indices", dtype=np.int32).astype(np.int64))
indptr = np.fromfile(d + "/indptr", dtype=np.int64)
rows = torch.from_numpy(np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr)))
def fit():
    X = torch.sparse_coo_tensor(torch.stack([rows, cols]).cuda(), values.cuda(), (n, p)).coalesce()
    U, S, V = torch.pca_lowrank(X, q=min(k + 10, n, p), center=True, niter=7)
    return S[:k].cpu(), V[:, :k].cpu(), X
torch.manual_seed(0)
fit(); torch.cuda.synchronize()
ts = []
for _ in range(repeats):
    torch.cuda.synchronize(); t = time.perf_counter()
    S, V, X = fit()
    torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
mean = torch.sparse.sum(X, dim=0).to_dense().double() / n
total = (float((X.values().double() ** 2).sum()) - n * float((mean ** 2).sum())) / (n - 1)
explained = S.double() ** 2 / (n - 1)
print(json.dumps({"median_s": float(np.median(ts)), "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
                  "evr_sum": float(explained.sum() / total), "device": torch.cuda.get_device_name()}))
"#;

fn write_csr(x: &Csr, dir: &Path) -> Result<()> {
    let io = |e| Error::output(dir, "cannot write the benchmark matrix", e);
    let put = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).map_err(io);
    put("shape", [x.rows as i64, x.cols as i64].iter().flat_map(|v| v.to_le_bytes()).collect())?;
    put("data", x.values.iter().flat_map(|v| v.to_le_bytes()).collect())?;
    put("indices", x.indices.iter().flat_map(|&v| (v as i32).to_le_bytes()).collect())?;
    put("indptr", x.indptr.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect())?;
    Ok(())
}

/// A peer on one workload: scikit-learn's `solver` on the CPU, or `torch_pca_lowrank` on CUDA.
fn peer(python: &str, (workload, x, k): (&str, &Csr, usize), repeats: usize, solver: &str) -> Option<Measurement> {
    let dir = tempfile_dir()?;
    write_csr(x, &dir).ok()?;
    let (script, tool) =
        if solver == "torch_pca_lowrank" { (PEER_TORCH, "PyTorch (cuda)") } else { (PEER, "scikit-learn") };
    let out = Command::new(python)
        .args(["-c", script, dir.to_str()?, &k.to_string(), &repeats.to_string(), solver])
        .output()
        .ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Measurement {
        tool: tool.into(),
        workload: workload.into(),
        solver: if solver == "torch_pca_lowrank" { "pca_lowrank q=k+10 niter=7".into() } else { solver.into() },
        median_s: v["median_s"].as_f64()?,
        peak_mb: v.get("peak_over_load_mb").unwrap_or(&v["peak_mb"]).as_f64()?,
        evr_sum: v["evr_sum"].as_f64()?,
    })
}

fn tempfile_dir() -> Option<PathBuf> {
    let dir = std::env::temp_dir().join(format!("embjob-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

fn lee_bow(path: &Path) -> Result<Csr> {
    let input = InputSpec::file(
        path.to_owned(),
        Format::Parquet,
        InputColumns::Text { text: "text".into(), id: Some("doc_id".into()) },
        b',',
    );
    let Dataset::Text(t) = crate::data::read_input(&input)? else {
        return Err(Error::Internal("lee_docs did not read as text".into()));
    };
    let plan = BowParams {
        lowercase: true,
        token_pattern: crate::text::token_pattern::TokenPattern::new(DEFAULT_TOKEN_PATTERN).map_err(Error::Internal)?,
        stop_words: Vec::new(),
        min_df: DfBound::Count(1),
        max_df: DfBound::Fraction(1.0),
        max_features: None,
        weighting: Weighting::Count,
    };
    Ok(crate::text::vectorizer::from_texts(&plan, &t.texts)?.matrix)
}

/// Runs the PCA benchmark, printing progress to `log` and returning every measurement: per workload the
/// randomized solver, `auto`'s pick, and scikit-learn's arpack (its best sparse solver) on the same matrix.
pub fn pca(opts: &PcaBenchOptions, log: &mut dyn Write) -> Result<Vec<Measurement>> {
    let wanted = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == name);
    let mut workloads: Vec<(String, Csr, usize)> = Vec::new();
    if wanted("lee") {
        let lee = lee_bow(&opts.lee)?;
        workloads.push((format!("lee_docs {}×{} ({} nnz)", lee.rows, lee.cols, lee.nnz()), lee, 10));
    }
    for shape in PCA_SHAPES.iter().filter(|s| wanted(s.name)) {
        let x = zipf_matrix(shape, 20_261_126);
        let kind = if shape.binary { "binary" } else { "counts" };
        workloads.push((format!("{} {}×{} {kind} ({} nnz)", shape.name, x.rows, x.cols, x.nnz()), x, shape.k));
    }
    let (be, report) = crate::backend::open(opts.backend)?;
    let tool = match &report.adapter {
        Some(a) if report.used == crate::backend::BackendKind::Gpu => format!("embjob ({})", a.name),
        _ => "embjob (cpu)".to_owned(),
    };
    let _ = writeln!(log, "backend: {} ({})", report.used, report.reason);
    let mut peers = vec!["arpack"];
    if opts.peer_device == "cuda" {
        peers.push("torch_pca_lowrank");
    }
    let mut all = Vec::new();
    for (name, x, k) in &workloads {
        for solver in [PcaSolver::Randomized, PcaSolver::Auto] {
            let _ = writeln!(log, "{tool} {name}: k = {k}, solver {solver:?} ...");
            all.push(measure(be.as_ref(), &tool, (name, x, *k), solver, opts.repeats)?);
        }
        // scikit-learn's PCA takes sparse input only with svd_solver="arpack" (its fastest there) or
        // "covariance_eigh": arpack is the CPU peer for every sparse workload.
        let Some(py) = &opts.python else { continue };
        for solver in &peers {
            let _ = writeln!(log, "peer {name}: k = {k}, {solver} ...");
            match peer(py, (name, x, *k), opts.repeats, solver) {
                Some(m) => all.push(m),
                None => {
                    let _ = writeln!(log, "  (peer unavailable: {py} with {solver} did not run)");
                }
            }
        }
    }
    Ok(all)
}

/// The measurements as a Markdown table, with the time and memory ratio of scikit-learn over embjob per workload.
pub fn table(ms: &[Measurement]) -> String {
    let mut s = String::from(
        "| workload | tool | solver | median s | peak MB | summed EVR | peer time / embjob time |\n|---|---|---|---|---|---|---|\n",
    );
    for (i, m) in ms.iter().enumerate() {
        // Each peer row follows the embjob rows of its workload; the ratio is against the last of them (auto).
        let ours = ms[..i].iter().rev().find(|e| e.tool.starts_with("embjob") && e.workload == m.workload);
        let ratio = match ours {
            Some(e) if !m.tool.starts_with("embjob") => format!("{:.2}×", m.median_s / e.median_s),
            _ => String::new(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.4} | {:.0} | {:.6} | {} |\n",
            m.workload, m.tool, m.solver, m.median_s, m.peak_mb, m.evr_sum, ratio
        ));
    }
    s
}

/// Options of `embjob bench train`.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// A pipeline with a [model] section (default pipelines/movielens.toml).
    pub config: PathBuf,
    pub repeats: usize,
    /// Python with torch and `ref_recommender.py` of the team's peers, for the side-by-side run.
    pub python: Option<String>,
    pub peer_script: PathBuf,
    /// Where the peer trains: "cpu" or "cuda".
    pub peer_device: String,
    /// Which backend trains (cpu, gpu, auto).
    pub backend: crate::plan::config::BackendChoice,
}

/// Training throughput of one tool.
#[derive(Debug, Clone)]
pub struct TrainMeasurement {
    pub tool: String,
    pub median_train_s: f64,
    pub median_epoch_s: f64,
    pub examples_per_s: f64,
    pub loo_recall_at_10: f64,
    pub runs: usize,
    /// A peer's row: the median over seeds of embjob's throughput over the peer's in the run right after it.
    pub paired_ratio: Option<f64>,
}

/// Trains the pipeline's model `repeats` times (model seeds 0, 1, ...), and after each run the PyTorch peer with
/// the same settings and seed when it can run: the two tools alternate, so a slow minute of a shared machine falls
/// on both rather than on one tool's whole series. Times cover the training steps only, as the peer's do. The log
/// shows each pair's throughput ratio.
pub fn train(opts: &TrainBenchOptions, log: &mut dyn Write) -> Result<Vec<TrainMeasurement>> {
    let plan = crate::job::load::load(&opts.config, &crate::Overrides::default())?;
    let Some(model) = plan.model.as_ref().map(|m| m.params.clone()) else {
        return Err(Error::Stage {
            stage: "bench",
            message: format!("{} has no [model] section", opts.config.display()),
        });
    };
    let Dataset::Interactions(data) = crate::data::read_input(&plan.input)? else {
        return Err(Error::Stage { stage: "bench", message: "the model needs a long or list input".into() });
    };
    let (mut ours, mut peer) = (Vec::new(), Vec::new());
    let mut examples = 0usize;
    let mut tool = String::new();
    let mut python = opts.python.clone();
    for seed in 0..opts.repeats.max(1) as u64 {
        let (ran, name, run_examples) = train_once(opts.backend, &data, &model, seed, log)?;
        (tool, examples) = (name, run_examples);
        ours.push(ran);
        let Some(py) = &python else { continue };
        match peer_train(py, &opts.peer_script, &opts.peer_device, &plan, &model, seed) {
            Some(run) => {
                let _ = writeln!(
                    log,
                    "peer seed {seed}: {:.3} s, {:.0} examples/s, LOO recall@10 {:.4}; embjob / peer {:.2}×",
                    run.train_s,
                    run.examples_per_s,
                    run.recall,
                    ran.examples_per_s / run.examples_per_s
                );
                peer.push(run);
            }
            None => {
                let script = opts.peer_script.display();
                let _ = writeln!(log, "(peer unavailable: {py} {script} did not run; torch installed?)");
                python = None;
            }
        }
    }
    let mut times: Vec<f64> = ours.iter().map(|r| r.train_s).collect();
    let median_train_s = median(&mut times);
    let mut all = vec![TrainMeasurement {
        tool,
        median_train_s,
        median_epoch_s: median_train_s / model.epochs as f64,
        examples_per_s: examples as f64 / median_train_s,
        loo_recall_at_10: ours.iter().map(|r| r.recall).sum::<f64>() / ours.len() as f64,
        runs: ours.len(),
        paired_ratio: None,
    }];
    if !peer.is_empty() {
        let mut times: Vec<f64> = peer.iter().map(|r| r.train_s).collect();
        let mut rates: Vec<f64> = peer.iter().map(|r| r.examples_per_s).collect();
        let median_train_s = median(&mut times);
        all.push(TrainMeasurement {
            tool: format!("PyTorch peer ({})", opts.peer_device),
            median_train_s,
            median_epoch_s: median_train_s / model.epochs as f64,
            examples_per_s: median(&mut rates),
            loo_recall_at_10: peer.iter().map(|r| r.recall).sum::<f64>() / peer.len() as f64,
            runs: peer.len(),
            paired_ratio: Some(median(
                &mut ours.iter().zip(&peer).map(|(a, b)| a.examples_per_s / b.examples_per_s).collect::<Vec<_>>(),
            )),
        });
    }
    Ok(all)
}

/// One training of embjob's with model seed `seed`, on a fresh backend: its figures, the tool's name and the
/// examples it trained on.
fn train_once(
    backend: crate::plan::config::BackendChoice,
    data: &crate::data::dataset::Interactions,
    model: &crate::recommend::train::ModelParams,
    seed: u64,
    log: &mut dyn Write,
) -> Result<(PeerRun, String, usize)> {
    let mut m = model.clone();
    m.train_seed = seed;
    let mut metrics = crate::runtime::metrics::Metrics::default();
    let (be, report) = crate::backend::open(backend)?;
    if seed == 0 {
        let _ = writeln!(log, "backend: {} ({})", report.used, report.reason);
    }
    let tool = format!("embjob ({})", report.adapter.as_ref().map_or("cpu".to_owned(), |a| a.name.clone()));
    let dim = m.embedding_dim_for(data.items.len());
    let out = crate::recommend::train::run(be.as_ref(), data, &m, dim, None, None, &mut metrics, &crate::Silent)?;
    let recall = metrics.get("eval_model", "loo_recall@10").unwrap_or(f64::NAN);
    let _ = writeln!(
        log,
        "embjob seed {seed}: {:.3} s, {:.0} examples/s, LOO recall@10 {recall:.4}",
        out.train_seconds, out.examples_per_second,
    );
    if let Some(profile) = be.profile_report() {
        let _ = writeln!(log, "GPU kernel times, seed {seed} (training and evaluation):\n{profile}");
    }
    let run = PeerRun { train_s: out.train_seconds, examples_per_s: out.examples_per_second, recall };
    Ok((run, tool, out.split_summary.train_examples * out.epochs_run))
}

/// One training run's figures.
#[derive(Debug, Clone, Copy)]
struct PeerRun {
    train_s: f64,
    examples_per_s: f64,
    recall: f64,
}

/// One run of the PyTorch peer with the model's settings and `seed`; `None` when it cannot run.
fn peer_train(
    python: &str,
    script: &Path,
    device: &str,
    plan: &crate::Plan,
    m: &crate::recommend::train::ModelParams,
    seed: u64,
) -> Option<PeerRun> {
    let out_dir = tempfile_dir()?;
    let dim = m.embedding_dim?.to_string();
    let mode = if m.pooling == crate::plan::config::Pooling::Mean { "mean" } else { "sum" };
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--favorites", plan.input.path.to_str()?, "--out", out_dir.to_str()?, "--device", device])
        .args(["--modes", mode, "--dim", &dim, "--hidden", &m.hidden_units.to_string()])
        .args(["--lr", &m.learning_rate.to_string(), "--batch", &m.batch_size.to_string()])
        .args(["--epochs", &m.epochs.to_string(), "--k", &m.inputs_per_example.to_string(), "--model-seeds"])
        .arg(seed.to_string());
    let out = cmd.output().ok()?;
    let _ = std::fs::remove_dir_all(&out_dir);
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(|line| {
        let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
        let is_model = v["event"] == "result" && v["model"] != "popularity" && v["model_seed"].is_number();
        is_model.then_some(())?;
        Some(PeerRun {
            train_s: v["train_s"].as_f64()?,
            examples_per_s: v["examples_per_s"].as_f64()?,
            recall: v["loo_recall@10"].as_f64().unwrap_or(f64::NAN),
        })
    })
}

/// The training measurements as a Markdown table with the throughput ratio against the first row.
pub fn train_table(ms: &[TrainMeasurement]) -> String {
    let mut s = String::from(
        "| tool | runs | median train s | median epoch s | examples/s | mean LOO recall@10 | embjob / tool throughput | median of paired ratios |\n|---|---|---|---|---|---|---|---|\n",
    );
    for m in ms {
        let ratio = ms.first().map(|e| format!("{:.2}×", e.examples_per_s / m.examples_per_s)).unwrap_or_default();
        let paired = m.paired_ratio.map_or("".to_owned(), |r| format!("{r:.2}×"));
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.3} | {:.0} | {:.4} | {} | {} |\n",
            m.tool, m.runs, m.median_train_s, m.median_epoch_s, m.examples_per_s, m.loo_recall_at_10, ratio, paired
        ));
    }
    s
}

/// The PyTorch GEMM peer: square f32 products (TF32 off, so the same arithmetic as ours) on the CPU and, when torch
/// sees one, on CUDA (cuBLAS); the median of `repeats` timed products after a warm-up, one JSON line per measurement.
const GEMM_PEER: &str = r#"
import json, sys, time
import torch
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
sizes, repeats = [int(s) for s in sys.argv[1].split(",")], int(sys.argv[2])
devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
for dev in devices:
    name = torch.cuda.get_device_name(0) if dev == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    for n in sizes:
        a = (torch.arange(n * n, device=dev) % 7).float().mul_(0.1).reshape(n, n)
        c = a @ a
        times = []
        for _ in range(repeats):
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            c = a @ a
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        print(json.dumps({"device": dev, "name": name, "n": n, "times": times}), flush=True)
"#;

/// GEMM throughput (GFLOP/s, median of `repeats`) of square f32 products on the CPU backend, on every GPU adapter
/// wgpu offers (software ones included) and, when `python` has torch, PyTorch on the CPU and CUDA side by side.
pub fn gemm(sizes: &[usize], repeats: usize, python: Option<&str>, cpu: bool, log: &mut dyn Write) -> Result<String> {
    let mut s = String::from("| backend | n | median ms | GFLOP/s |\n|---|---|---|---|\n");
    let mut row = |name: &str, n: usize, times: &mut Vec<f64>| {
        let t = median(times);
        let gflops = 2.0 * (n as f64).powi(3) / t / 1e9;
        let _ = writeln!(log, "{name} n={n}: {:.2} ms, {gflops:.1} GFLOP/s", t * 1e3);
        s.push_str(&format!("| {name} | {n} | {:.2} | {gflops:.1} |\n", t * 1e3));
    };
    for &n in sizes.iter().filter(|_| cpu) {
        let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; n * n];
        let d = crate::backend::MatDims { m: n, n, k: n };
        let mut times = Vec::new();
        for _ in 0..repeats.max(1) {
            let t = Instant::now();
            crate::backend::cpu::matmul(&a, false, &a, false, &mut c, d, 0.0)?;
            times.push(t.elapsed().as_secs_f64());
        }
        row("cpu (faer GEMM)", n, &mut times);
    }
    let wanted = |a: &crate::backend::AdapterReport| ["Vulkan", "Metal", "Dx12"].contains(&a.backend.as_str());
    for adapter in crate::backend::device::adapters().into_iter().filter(wanted) {
        let Some(gpu) = crate::backend::gpu::Gpu::open(Some(&adapter.name), true)? else { continue };
        for &n in sizes {
            let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
            let (ga, c) = (gpu.tensor(&a)?, gpu.tensor(&vec![0.0; n * n])?);
            let d = crate::backend::MatDims { m: n, n, k: n };
            // Warm-up (pipeline compilation on first use), then timed submissions, each waited for.
            gpu.matmul(&ga, false, &ga, false, &c, d, 0.0)?;
            gpu.read(&c)?;
            let mut times = Vec::new();
            for _ in 0..repeats.max(1) {
                let t = Instant::now();
                gpu.matmul(&ga, false, &ga, false, &c, d, 0.0)?;
                gpu.finish()?;
                times.push(t.elapsed().as_secs_f64());
            }
            row(&format!("gpu: {} ({})", gpu.adapter().name, gpu.adapter().device_type), n, &mut times);
        }
    }
    if let Some(py) = python {
        let list = sizes.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
        match Command::new(py).args(["-c", GEMM_PEER, &list, &repeats.max(1).to_string()]).output() {
            Ok(out) if out.status.success() => {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
                    let (Some(n), Some(times)) = (v["n"].as_u64(), v["times"].as_array()) else { continue };
                    let mut times: Vec<f64> = times.iter().filter_map(serde_json::Value::as_f64).collect();
                    let name =
                        format!("torch {}: {}", v["device"].as_str().unwrap_or("?"), v["name"].as_str().unwrap_or("?"));
                    row(&name, n as usize, &mut times);
                }
            }
            _ => {
                let _ = writeln!(log, "(peer unavailable: {py} with torch did not run)");
            }
        }
    }
    Ok(s)
}

/// Cosine nearest neighbours of every item among `items` seeded random vectors (`dim` wide; normal, with a
/// planted cluster per 100 items so that the lists are not noise): the CPU backend's tiled search and every
/// hardware GPU adapter, median seconds of `repeats` and the peak memory.
pub fn neighbors(items: usize, dim: usize, k: usize, repeats: usize, log: &mut dyn Write) -> Result<String> {
    let mut rng = crate::linalg::rng::SplitMix::new(11);
    let centres: Vec<f32> = (0..items.div_ceil(100) * dim).map(|_| rng.normal() as f32).collect();
    let x: Vec<f32> =
        (0..items * dim).map(|i| centres[(i / dim / 100) * dim + i % dim] + 0.5 * rng.normal() as f32).collect();
    let mut s = String::from(
        "| backend | items | dim | k | median s | items/s | peak RSS MB |\n|---|---|---|---|---|---|---|\n",
    );
    let mut row = |name: &str, times: &mut Vec<f64>| {
        let m = median(times);
        s.push_str(&format!(
            "| {name} | {items} | {dim} | {k} | {m:.2} | {:.0} | {:.0} |\n",
            items as f64 / m,
            crate::runtime::memory::peak_rss_mb()
        ));
    };
    let mut times = Vec::new();
    let mut first: Option<Vec<u32>> = None;
    for r in 0..repeats.max(1) {
        let t = Instant::now();
        let (idx, _) = crate::backend::cpu::cosine_top_k(&x, items, dim, k)?;
        times.push(t.elapsed().as_secs_f64());
        let _ = writeln!(log, "cpu run {r}: {:.2} s", times[r]);
        first.get_or_insert(idx);
    }
    row("cpu", &mut times);
    for adapter in crate::backend::device::adapters() {
        if !adapter.is_hardware() {
            let _ = writeln!(log, "(skipped software adapter {})", adapter.name);
            continue;
        }
        let Some(gpu) = crate::backend::gpu::Gpu::open(Some(&adapter.name), false)? else { continue };
        let buf = gpu.tensor(&x)?;
        let mut times = Vec::new();
        for r in 0..repeats.max(1) {
            let t = Instant::now();
            let (idx, _) = gpu.cosine_top_k(&buf, items, dim, k)?;
            times.push(t.elapsed().as_secs_f64());
            let same = first.as_ref().map_or(0, |f| f.iter().zip(&idx).filter(|(a, b)| a == b).count());
            let _ = writeln!(log, "gpu run {r}: {:.2} s, {same} of {} neighbours as the CPU's", times[r], idx.len());
        }
        row(&format!("gpu: {}", gpu.adapter().name), &mut times);
    }
    Ok(s)
}

/// The Lee corpus for `bench pca`: as given, else the team's copy in ../shared/data, else the test fixture.
pub fn lee_path(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let shared = PathBuf::from("../shared/data/lee_docs.parquet");
        if shared.exists() {
            shared
        } else {
            PathBuf::from("tests/fixtures/lee_docs.parquet")
        }
    })
}

/// The model folder for `bench encode`: as given, else `$EMBJOB_MODEL_DIR`, else models/all-MiniLM-L6-v2.
pub fn model_path(given: Option<PathBuf>) -> PathBuf {
    given
        .or_else(|| std::env::var_os("EMBJOB_MODEL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("models/all-MiniLM-L6-v2"))
}

/// `bench encode --text NAME=PARQUET:COLUMN[*N]` (the column's texts N times over), or the default sets: the Lee
/// corpus (../shared/data, else pipelines/data), with `long` the long set (Lee × 20, 6,000 documents, about 1.2
/// million tokens), and, where ../shared has them, the MovieLens titles.
pub fn text_sets(texts: &[String], long: bool) -> Result<Vec<TextSet>> {
    if texts.is_empty() {
        let shared = PathBuf::from("../shared/data");
        let lee = if shared.join("lee_docs.parquet").exists() {
            shared.join("lee_docs.parquet")
        } else {
            PathBuf::from("pipelines/data/lee_docs.parquet")
        };
        let mut sets = vec![TextSet { name: "lee (news)".into(), path: lee.clone(), column: "text".into(), repeat: 1 }];
        if long {
            sets.push(TextSet { name: "lee × 20 (long)".into(), path: lee, column: "text".into(), repeat: 20 });
        }
        if shared.join("movielens_movies.parquet").exists() {
            sets.push(TextSet {
                name: "movielens titles".into(),
                path: shared.join("movielens_movies.parquet"),
                column: "title".into(),
                repeat: 1,
            });
        }
        return Ok(sets);
    }
    texts.iter().map(|t| text_set(t)).collect()
}

/// One `--text NAME=PARQUET:COLUMN[*N]`.
fn text_set(t: &str) -> Result<TextSet> {
    let bad = || Error::Stage { stage: "bench", message: format!("--text {t}: expected NAME=PARQUET:COLUMN[*N]") };
    let (name, rest) = t.split_once('=').ok_or_else(bad)?;
    let (path, column) = rest.rsplit_once(':').ok_or_else(bad)?;
    let (column, repeat) = match column.rsplit_once('*') {
        Some((column, n)) => (column, n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(bad)?),
        None => (column, 1),
    };
    if name.is_empty() || path.is_empty() || column.is_empty() {
        return Err(bad());
    }
    Ok(TextSet { name: name.into(), path: path.into(), column: column.into(), repeat })
}
