//! What a run leaves behind: Parquet files with the documented schemas under `latest`, run.json, old runs pruned.

use crate::support::*;

#[test]
fn the_food_pipeline_fills_latest() {
    let out = tempfile::tempdir().expect("tmp");
    let r =
        embjob(&["run", "pipelines/food.toml", "--quiet", "--output", out.path().to_str().expect("utf-8")], &repo());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = out.path().join("latest");
    for f in [
        "vocabulary.parquet",
        "bow.parquet",
        "metrics.parquet",
        "pca_components.parquet",
        "pca_features.parquet",
        "pca_projections.parquet",
        "embeddings.parquet",
        "neighbors.parquet",
        "run.json",
    ] {
        assert!(latest.join(f).is_file(), "{f} missing");
    }
    let vocab = read_parquet(&latest.join("vocabulary.parquet"));
    assert_eq!(
        vocab.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["token_id", "token", "df", "count"]
    );
    assert_eq!(vocab.height(), 240, "the food data has 240 items");
    let bow = read_parquet(&latest.join("bow.parquet"));
    assert_eq!(
        bow.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["row_id", "row", "token_id", "value"]
    );
    assert_eq!(bow.height(), 20_000, "4,000 users × 5 favourites");
    let metrics = read_parquet(&latest.join("metrics.parquet"));
    assert_eq!(
        metrics.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["run_id", "stage", "metric", "index", "value"]
    );
    assert_eq!(metrics.column("value").expect("value").dtype(), &polars::prelude::DataType::Float64);

    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("run.json")).expect("run.json")).expect("json");
    assert_eq!(run["job"], "food");
    assert_eq!(run["seed"], 42);
    // food.toml says backend = "auto": the CPU here and in CI (lavapipe is software, never chosen by auto), a hardware
    // GPU where there is one (the H200 of a device session, for one).
    match run["backend"]["used"].as_str() {
        Some("cpu") => assert!(run["backend"]["adapter"].is_null(), "{}", run["backend"]),
        Some("gpu") => assert_ne!(run["backend"]["adapter"]["device_type"], "Cpu", "auto chose a software adapter"),
        other => panic!("backend used: {other:?}"),
    }
    assert_eq!(run["inputs"][0]["sha256"].as_str().map(str::len), Some(64));
    // The versions are the ones Cargo.lock pinned, not numbers written by hand.
    let lock = std::fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock");
    for krate in ["polars", "wgpu", "faer"] {
        let needle = format!("name = \"{krate}\"\nversion = \"");
        let at = lock.find(&needle).expect("locked") + needle.len();
        let locked = lock[at..].split('"').next().expect("version");
        assert_eq!(run["versions"][krate], locked, "{krate} version in run.json");
    }
    assert!(run["versions"]["rustc"].as_str().is_some_and(|v| v.starts_with("rustc ")), "{}", run["versions"]);
    let stages: Vec<&str> =
        run["stages"].as_array().expect("stages").iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(stages, ["ingest", "bow", "pca", "train", "eval", "write"]);
    assert_eq!(run["details"]["pca"]["solver"], "covariance", "240 items < 4,000 users");

    let proj = read_parquet(&latest.join("pca_projections.parquet"));
    assert_eq!(proj.height(), 4_000);
    assert_eq!(
        proj.column("vector").expect("vector").dtype(),
        &polars::prelude::DataType::Array(Box::new(polars::prelude::DataType::Float32), 8),
        "vectors are fixed-size lists of float32"
    );
    let comps = read_parquet(&latest.join("pca_components.parquet"));
    assert_eq!(comps.height(), 8 * 240);
    assert_eq!(
        comps.get_column_names().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        ["component", "token_id", "token", "loading"]
    );
}

#[test]
fn quiet_runs_print_nothing_and_loud_runs_print_one_line_per_stage() {
    let job = long_job("");
    let quiet = job.run(&[]);
    assert_eq!(quiet.code, 0);
    assert_eq!(quiet.stderr.trim(), "", "quiet run printed: {}", quiet.stderr);
    let config = job.config();
    let loud = embjob(&["run", config.to_str().expect("utf-8")], job.dir.path());
    assert_eq!(loud.code, 0, "{}", loud.stderr);
    for stage in ["ingest:", "bow:", "write:", "done:"] {
        assert_eq!(loud.stderr.matches(stage).count(), 1, "{stage} in:\n{}", loud.stderr);
    }
}

#[test]
fn latest_moves_to_each_new_run_and_old_runs_are_pruned() {
    let job = long_job("keep_runs = 2\n");
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let latest = job.latest().expect("latest");
        assert!(!seen.contains(&latest), "latest did not move");
        seen.push(latest);
    }
    let runs = job.runs();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let newest = seen.last().expect("a run").file_name().expect("name").to_string_lossy().into_owned();
    assert_eq!(runs.last(), Some(&newest));
}

#[test]
fn a_killed_runs_staging_folder_is_removed_by_the_next_run() {
    let job = long_job("");
    let stale = job.out().join("runs").join(".staging-20000101T000000000Z-999999999");
    std::fs::create_dir_all(&stale).expect("mkdir");
    std::fs::write(stale.join("bow.parquet"), b"half").expect("write");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!stale.exists(), "stale staging folder left behind");
}

#[test]
fn gpu_backend_without_a_usable_gpu_is_exit_code_4() {
    let job = long_job("");
    let config = job.config();
    let r = Outcome::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_embjob"))
            .args(["run", config.to_str().expect("utf-8"), "--quiet", "--backend", "gpu"])
            .env("EMBJOB_ADAPTER", "no-such-adapter-anywhere")
            .output()
            .expect("run"),
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("gpu"), "{}", r.stderr);
    assert!(job.latest().is_none());
}

#[test]
fn list_layout_reads_movielens_favourites() {
    let out = tempfile::tempdir().expect("tmp");
    let r = embjob(
        &["run", "pipelines/movielens.toml", "--quiet", "--output", out.path().to_str().expect("utf-8")],
        &repo(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vocab = read_parquet(&out.path().join("latest").join("vocabulary.parquet"));
    assert_eq!(vocab.height(), 6_169, "movies");
    let ids: Vec<i64> = strs(&vocab, "token").iter().map(|t| t.parse().expect("movieId")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "items sort numerically, as the peer's item index does");
    let bow = read_parquet(&out.path().join("latest").join("bow.parquet"));
    assert_eq!(bow.height(), 51_535, "favourites");
}

#[test]
fn shipped_food_data_is_what_the_generator_writes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let r = embjob(&["gen-food", "--out", tmp.path().to_str().expect("utf-8")], &repo());
    assert_eq!(r.code, 0, "{}", r.stderr);
    for f in ["food_favorites.csv", "food_items.csv", "food_pairs.csv"] {
        let shipped = std::fs::read(repo().join("pipelines/data").join(f)).expect("shipped");
        let fresh = std::fs::read(tmp.path().join(f)).expect("fresh");
        assert!(shipped == fresh, "{f} differs from the generator's output");
    }
}
