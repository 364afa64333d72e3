//! A small builder for pipelines in a temporary folder, and helpers to run the `embjob` binary on them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use polars::prelude::*;

/// Each named check (a `fn(&dyn Backend)`) as one test per backend, as candle's `test_device!` does:
/// `<check>::cpu`, and `<check>::gpu` wherever an adapter exists (lavapipe counts; with EMBJOB_REQUIRE_GPU=1 a
/// missing adapter fails it instead of skipping). A failure on one backend does not hide the other's result.
macro_rules! on_each_backend {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[test]
            fn cpu() {
                super::$check(&embjob::backend::Cpu::new());
            }

            #[test]
            fn gpu() {
                if let Some(g) = crate::support::gpu_backend() {
                    super::$check(g);
                }
            }
        }
    )*};
}
pub(crate) use on_each_backend;

/// The shared wgpu backend of this test process, or `None` (skip) when there is no adapter and EMBJOB_REQUIRE_GPU
/// is not set.
pub fn gpu_backend() -> Option<&'static embjob::backend::gpu::Gpu> {
    use embjob::backend::gpu::Gpu;
    static GPU: std::sync::OnceLock<Option<Gpu>> = std::sync::OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        let gpu = Gpu::open(std::env::var("EMBJOB_ADAPTER").ok().as_deref(), true).expect("open adapter");
        if let Some(g) = &gpu {
            let a = g.adapter();
            eprintln!("GPU tests on {} ({}, {})", a.name, a.backend, a.device_type);
        }
        gpu
    });
    if gpu.is_none() {
        skip_unless_required(
            "EMBJOB_REQUIRE_GPU",
            "no GPU adapter was found (install mesa-vulkan-drivers for lavapipe)",
        );
    }
    gpu.as_ref()
}

/// A test that cannot run on this machine: a failure when `switch` is set to 1 (CI sets every such switch), a
/// notice on stderr otherwise. Every skip that depends on the machine goes through here.
pub fn skip_unless_required(switch: &str, why: &str) {
    if std::env::var(switch).is_ok_and(|v| v == "1") {
        panic!("{switch}=1 but {why}");
    }
    eprintln!("SKIPPED ({switch} is not set): {why}");
}

/// A small tmpfs mounted over `dir` for a disk-full test, unmounted when dropped; `None` (after
/// [`skip_unless_required`] for `EMBJOB_REQUIRE_MOUNT`, which CI sets) where mounting is not allowed (needs root).
pub struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    pub fn mount(dir: &Path, size: &str) -> Option<SmallTmpfs> {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", dir.to_str().expect("utf-8")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            skip_unless_required("EMBJOB_REQUIRE_MOUNT", "cannot mount a small tmpfs here (needs root)");
            return None;
        }
        Some(SmallTmpfs(dir.to_owned()))
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A tolerance for `be`: `cpu` on the CPU backend (f64 products), at least `gpu` on the wgpu backend (f32).
pub fn tolerance(be: &dyn embjob::backend::Backend, cpu: f64, gpu: f64) -> f64 {
    match be.kind() {
        embjob::backend::BackendKind::Cpu => cpu,
        embjob::backend::BackendKind::Gpu => cpu.max(gpu),
    }
}

/// The repository root (where Cargo.toml is).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A test fixture under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests").join("fixtures").join(name)
}

/// A pipeline in its own temporary folder: `job.toml`, its input files, and `out/` for the outputs.
pub struct Job {
    pub dir: tempfile::TempDir,
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Job {
    pub fn new() -> Job {
        Job { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// Writes `job.toml`.
    pub fn toml(self, text: &str) -> Job {
        std::fs::write(self.dir.path().join("job.toml"), text).expect("write toml");
        self
    }

    /// Replaces `from` (which must be there) with `to` in `job.toml`.
    pub fn edit_toml(self, from: &str, to: &str) -> Job {
        let path = self.config();
        let toml = std::fs::read_to_string(&path).expect("read toml");
        assert!(toml.contains(from), "{from:?} is not in job.toml");
        std::fs::write(path, toml.replacen(from, to, 1)).expect("write toml");
        self
    }

    /// Writes a file (input data) next to job.toml.
    pub fn file(self, name: &str, contents: impl AsRef<[u8]>) -> Job {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, contents).expect("write file");
        self
    }

    /// Copies a file next to job.toml (`name` may name a subfolder).
    pub fn copy(self, from: &Path, name: &str) -> Job {
        let to = self.dir.path().join(name);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::copy(from, to).expect("copy");
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("job.toml")
    }

    /// `embjob run job.toml --quiet <args>`.
    pub fn run(&self, args: &[&str]) -> Outcome {
        let config = self.config();
        let mut all = vec!["run", config.to_str().expect("utf-8 path"), "--quiet"];
        all.extend_from_slice(args);
        embjob(&all, self.dir.path())
    }

    /// Runs the job without `--quiet`: stage summaries and notices on stderr.
    pub fn run_loud(&self, args: &[&str]) -> Outcome {
        let config = self.config();
        let mut all = vec!["run", config.to_str().expect("utf-8 path")];
        all.extend_from_slice(args);
        embjob(&all, self.dir.path())
    }

    /// The "good run, break it, rerun" check: runs the job (it must succeed), applies `change` to its folder (new
    /// data, another config), runs again and, when that run fails, asserts that `latest` and every run folder are as
    /// the good run left them (no new run, no staging folder). Returns the second run's outcome.
    pub fn rerun_after(&self, change: impl FnOnce(&Job)) -> Outcome {
        let first = self.run(&[]);
        assert_eq!(first.code, 0, "the good run failed: {}", first.stderr);
        let (latest, runs) = (self.latest(), self.runs());
        assert!(latest.is_some(), "no latest after the good run");
        change(self);
        let r = self.run(&[]);
        if r.code != 0 {
            assert_eq!(self.latest(), latest, "latest moved; stderr: {}", r.stderr);
            assert_eq!(self.runs(), runs, "runs changed (or a staging folder remains); stderr: {}", r.stderr);
        }
        r
    }

    /// Rewrites `job.toml` with `f` applied to its text.
    pub fn rewrite_toml(&self, f: impl FnOnce(String) -> String) {
        let toml = std::fs::read_to_string(self.config()).expect("read toml");
        std::fs::write(self.config(), f(toml)).expect("write toml");
    }

    /// `embjob validate job.toml`.
    pub fn validate(&self) -> Outcome {
        let config = self.config();
        embjob(&["validate", config.to_str().expect("utf-8 path")], self.dir.path())
    }

    /// The output folder (`out/` next to job.toml unless the config says otherwise).
    pub fn out(&self) -> PathBuf {
        self.path("out")
    }

    /// Where `out/latest` points, if anywhere.
    pub fn latest(&self) -> Option<PathBuf> {
        std::fs::read_link(self.out().join("latest")).ok()
    }

    /// Run folders under out/runs (complete ones; hidden staging folders excluded).
    pub fn runs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.out().join("runs"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// A failed first run left nothing: no `latest`, no run or staging folder.
    pub fn assert_no_run(&self) {
        assert!(self.latest().is_none(), "latest exists: {:?}", self.latest());
        assert!(self.runs().is_empty(), "run folders remain: {:?}", self.runs());
    }

    /// Every entry under out/runs, hidden ones included.
    pub fn all_run_entries(&self) -> Vec<String> {
        self.runs()
    }

    /// Reads a Parquet file of the latest run.
    pub fn latest_parquet(&self, name: &str) -> DataFrame {
        read_parquet(&self.out().join("latest").join(name))
    }
}

impl From<std::process::Output> for Outcome {
    fn from(out: std::process::Output) -> Outcome {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs the binary with `args` in `cwd`.
pub fn embjob(args: &[&str], cwd: &Path) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_embjob")).args(args).current_dir(cwd).output().expect("run embjob");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn read_parquet(path: &Path) -> DataFrame {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    ParquetReader::new(f).finish().unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn read_csv(path: &Path) -> DataFrame {
    CsvReadOptions::default()
        .with_has_header(true)
        .try_into_reader_with_file_path(Some(path.to_owned()))
        .and_then(|r| r.finish())
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn i64s(df: &DataFrame, col: &str) -> Vec<i64> {
    let s = df.column(col).expect("column").as_materialized_series().cast(&DataType::Int64).expect("cast");
    s.i64().expect("i64").iter().map(|v| v.expect("no nulls")).collect()
}

pub fn f64s(df: &DataFrame, col: &str) -> Vec<f64> {
    let s = df.column(col).expect("column").as_materialized_series().cast(&DataType::Float64).expect("cast");
    s.f64().expect("f64").iter().map(|v| v.expect("no nulls")).collect()
}

pub fn strs(df: &DataFrame, col: &str) -> Vec<String> {
    let s = df.column(col).expect("column").as_materialized_series().cast(&DataType::String).expect("cast");
    s.str().expect("str").iter().map(|v| v.expect("no nulls").to_owned()).collect()
}

/// The latest run's metrics that must repeat exactly for one config and seed: every (stage, metric, value bits)
/// but wall times, throughput and memory.
pub fn result_metrics(job: &Job) -> Vec<(String, String, u64)> {
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    (0..m.height())
        .filter(|&r| s[r] != "efficiency" && n[r] != "seconds" && n[r] != "examples_per_second")
        .map(|r| (s[r].clone(), n[r].clone(), v[r].to_bits()))
        .collect()
}

/// A minimal valid long-layout pipeline over `data.csv`, with extra TOML appended.
pub fn long_job(extra: &str) -> Job {
    Job::new()
        .file("data.csv", "user,item\n1,apple\n1,pear\n2,apple\n2,plum\n3,pear\n3,plum\n3,apple\n")
        .toml(&format!(
            "[job]\nname = \"t\"\nbackend = \"cpu\"\n\n[input]\npath = \"data.csv\"\nlayout = \"long\"\n\n[output]\ndir = \"out\"\n{extra}"
        ))
}

/// A Parquet table of a run: a file, or the folder of its parts stacked in name order.
pub fn table(run: &Path, stem: &str) -> DataFrame {
    let file = run.join(format!("{stem}.parquet"));
    if file.is_file() {
        return read_parquet(&file);
    }
    let mut parts: Vec<PathBuf> =
        std::fs::read_dir(run.join(stem)).expect("parts").map(|e| e.expect("entry").path()).collect();
    parts.sort();
    let mut df = read_parquet(&parts[0]);
    for p in &parts[1..] {
        df.vstack_mut(&read_parquet(p)).expect("vstack");
    }
    df
}

/// Two frames hold the same columns with the same values, floats compared by their bits.
pub fn assert_same_bits(a: &DataFrame, b: &DataFrame, what: &str) {
    assert_eq!(a.get_column_names(), b.get_column_names(), "{what}: columns");
    assert_eq!(a.height(), b.height(), "{what}: rows");
    for c in a.get_column_names() {
        let (x, y) = (a.column(c).expect("col"), b.column(c).expect("col"));
        let bits = |s: &Column| -> Option<Vec<u64>> {
            let s = s.as_materialized_series();
            match s.dtype() {
                DataType::Float64 => Some(s.f64().expect("f64").into_no_null_iter().map(f64::to_bits).collect()),
                DataType::Array(..) => Some(
                    s.array()
                        .expect("array")
                        .get_inner()
                        .f32()
                        .expect("f32")
                        .into_no_null_iter()
                        .map(|v| u64::from(v.to_bits()))
                        .collect(),
                ),
                _ => None,
            }
        };
        match (bits(x), bits(y)) {
            (Some(p), Some(q)) => assert!(p == q, "{what}: column {c} differs in its bits"),
            _ => assert!(x.equals_missing(y), "{what}: column {c} differs"),
        }
    }
}
