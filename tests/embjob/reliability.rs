//! Runs that are stopped or killed never leave a half-written result: `latest` keeps pointing at a complete earlier
//! run, no staging folder stays visible after the next run, and a rerun succeeds. Same config and seed, same results
//! for any thread count.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use embjob::linalg::rng::SplitMix;

use crate::support::*;

fn food_job(epochs: u32) -> Job {
    Job::new().copy(&repo().join("pipelines/data/food_favorites.csv"), "food.csv").toml(&format!(
        "[job]\nname='food'\nseed=1\nbackend='cpu'\n[input]\npath='food.csv'\nlayout='long'\nuser='user_id'\nitem='item'\n\
         order='rank'\n[pca]\nn_components=4\n[model]\nembedding_dim=3\nhidden_units=16\n[train]\nepochs={epochs}\n\
         batch_size=64\n[eval]\nk=[5]\nneighbors=5\n[output]\ndir='out'\nkeep_runs=3\n"
    ))
}

fn spawn(job: &Job, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_embjob"));
    cmd.args(["run", job.config().to_str().expect("utf-8"), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn embjob")
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig} failed");
}

/// `latest` points at a complete run: every file of the run is there and readable.
fn assert_latest_complete(job: &Job) {
    let latest = job.out().join("latest");
    assert!(latest.join("run.json").is_file(), "latest has no run.json");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("run.json")).expect("run.json")).expect("json");
    for f in run["outputs"].as_array().expect("outputs") {
        let name = f["file"].as_str().expect("file");
        let rows = f["rows"].as_u64().expect("rows");
        let path = latest.join(name);
        if name.ends_with(".parquet") {
            assert_eq!(read_parquet(&path).height() as u64, rows, "{name}");
        } else if name.ends_with(".vec") || name.ends_with(".tsv") {
            // A .vec file: its header's count and one line per vector; a projector tensor file: one line per vector.
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            let header = u64::from(name.ends_with(".vec"));
            assert_eq!(text.lines().count() as u64, rows + header, "{name}");
            if header == 1 {
                let count = text.split_whitespace().next().and_then(|c| c.parse::<u64>().ok());
                assert_eq!(count, Some(rows), "{name}: header");
            }
        } else {
            assert!(std::fs::metadata(&path).is_ok_and(|m| m.len() > 0), "{name} missing or empty");
        }
    }
}

fn staging_folders(job: &Job) -> Vec<String> {
    job.runs().into_iter().filter(|r| r.starts_with(".staging")).collect()
}

#[test]
fn sigterm_and_sigint_stop_the_run_cleanly() {
    let job = food_job(1);
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = job.latest();
    let runs = job.runs();
    std::fs::write(
        job.config(),
        std::fs::read_to_string(job.config()).expect("toml").replace("epochs=1", "epochs=500"),
    )
    .expect("write");
    for (sig, code, name) in [("-TERM", 143, "SIGTERM"), ("-INT", 130, "SIGINT")] {
        let child = spawn(&job, &[]);
        std::thread::sleep(Duration::from_millis(1500));
        signal(&child, sig);
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        assert!(stderr.contains(name) && stderr.contains("nothing of this run was kept"), "{stderr}");
        assert_eq!(job.latest(), latest, "{name} moved latest");
        assert_eq!(job.runs(), runs, "{name} left a run or a staging folder behind");
    }
    assert_latest_complete(&job);
}

#[test]
fn sigkill_at_random_moments_never_breaks_latest() {
    let job = food_job(3);
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // How long a whole run takes here, to spread the kills over it.
    let t = Instant::now();
    assert_eq!(job.run(&[]).code, 0);
    let full = t.elapsed().as_millis() as usize;
    let mut rng = SplitMix::new(7);
    for i in 0..10 {
        let child = spawn(&job, &[]);
        std::thread::sleep(Duration::from_millis(rng.below(full.max(50)) as u64));
        signal(&child, "-KILL");
        let _ = child.wait_with_output();
        assert!(job.latest().is_some(), "kill {i}: latest vanished");
        assert_latest_complete(&job);
    }
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "rerun after kills: {}", r.stderr);
    assert_latest_complete(&job);
    assert!(staging_folders(&job).is_empty(), "staging debris after a rerun: {:?}", job.runs());
    assert!(job.runs().len() <= 3, "keep_runs = 3: {:?}", job.runs());
}

/// The food job with every evaluation on: planted cuisine labels and pair scores.
fn food_job_with_labels(epochs: u32) -> Job {
    let data = repo().join("pipelines/data");
    food_job(epochs)
        .copy(&data.join("food_items.csv"), "items.csv")
        .copy(&data.join("food_pairs.csv"), "pairs.csv")
        .edit_toml("neighbors=5\n", "neighbors=5\nlabels='items.csv'\nlabels_category='cuisine'\npairs='pairs.csv'\n")
}

/// MovieLens favourites with the peer's model: 256 × 64 × 6,169 products, which the CPU GEMM splits across threads.
fn movielens_job() -> Job {
    Job::new().copy(&repo().join("pipelines/data/movielens_favorites.parquet"), "ml.parquet").toml(
        "[job]\nname='ml'\nseed=3\nbackend='cpu'\n[input]\npath='ml.parquet'\nlayout='list'\nuser='user_id'\n\
         item='items'\n[bow]\nweighting='binary'\n[pca]\nn_components=8\n[model]\nembedding_dim=32\n\
         hidden_units=64\n[train]\nepochs=1\nbatch_size=256\n[eval]\nk=[10]\nneighbors=10\n[output]\ndir='out'\n",
    )
}

const RESULT_FILES: [&str; 6] = [
    "vocabulary.parquet",
    "bow.parquet",
    "pca_components.parquet",
    "pca_projections.parquet",
    "embeddings.parquet",
    "neighbors.parquet",
];

/// Runs `make()` as three processes (1 thread, 2 threads, 2 threads again: a new process, so a new hash seed)
/// and asserts that every result file and result metric is identical.
fn assert_repeats_across_processes_and_threads(make: impl Fn() -> Job) {
    let runs: Vec<Job> = ["1", "2", "2"]
        .iter()
        .map(|threads| {
            let job = make();
            let out = spawn(&job, &[("RAYON_NUM_THREADS", threads)]).wait_with_output().expect("wait");
            assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
            job
        })
        .collect();
    for other in &runs[1..] {
        for f in RESULT_FILES {
            assert!(runs[0].latest_parquet(f).equals(&other.latest_parquet(f)), "{f} differs between runs");
        }
        assert_eq!(result_metrics(&runs[0]), result_metrics(other));
    }
}

#[test]
fn labels_and_pairs_repeat_across_processes_and_thread_counts() {
    assert_repeats_across_processes_and_threads(|| food_job_with_labels(2));
    // The label metrics are there to compare (the chance rate summed over a hash map once changed per process).
    let job = food_job_with_labels(1);
    assert_eq!(job.run(&[]).code, 0);
    let names: Vec<String> = result_metrics(&job).into_iter().map(|(_, m, _)| m).collect();
    for m in ["label_agreement", "label_agreement_chance", "spearman"] {
        assert!(names.iter().any(|n| n == m), "{m} missing from {names:?}");
    }
}

#[test]
fn movielens_sized_products_repeat_across_processes_and_thread_counts() {
    assert_repeats_across_processes_and_threads(movielens_job);
}

#[test]
fn a_full_disk_fails_the_run_without_damage() {
    let job = long_job("");
    // A 96 KiB tmpfs as the output folder.
    let Some(tmpfs) = SmallTmpfs::mount(&job.out(), "96k") else { return };
    let first = job.run(&[]);
    let (latest, runs) = (job.latest(), job.runs());
    // A second input whose BoW does not fit in what is left.
    let mut csv = String::from("user,item\n");
    for u in 0..20_000 {
        csv.push_str(&format!("{u},item{}\nu{u},other{}\n", u % 5000, u * 7 % 4999));
    }
    std::fs::write(job.path("data.csv"), csv).expect("write data");
    let second = job.run(&[]);
    let after = (job.latest(), job.runs());
    drop(tmpfs);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(second.stderr.contains("No space left") || second.stderr.contains("space"), "{}", second.stderr);
    assert_eq!(after, (latest, runs), "latest moved or a staging folder stayed behind");
}
