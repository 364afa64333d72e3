//! Sharded runs: `embjob run --shard i/N` on each share of a many-file text input, then `embjob merge`, give the
//! single run's results bit for bit (vocabulary, BoW, PCA, document neighbours and their scores, metrics; the text
//! vectors as a partitioned table), for any N, empty shards included. The merge refuses, naming them, missing
//! shards, shards of another config or input, and a mix of splits; a retried or killed shard task leaves a complete
//! shard or none.

use std::path::{Path, PathBuf};

use embjob::data::table::{ColumnData, Table};

use crate::support::*;

/// The Lee corpus (300 news documents, tests/fixtures/lee_docs.parquet) split into five Parquet files of uneven
/// sizes under `docs/`, the tiny BERT model, labels by id (three categories), and a text job over them.
fn sharded_job(extra: &str) -> Job {
    let lee = read_parquet(&fixture("lee_docs.parquet"));
    let (ids, texts) = (i64s(&lee, "doc_id"), strs(&lee, "text"));
    let mut job = Job::new();
    let mut start = 0;
    for (f, size) in [90, 10, 120, 45, 35].into_iter().enumerate() {
        let table = Table::new(vec![
            ("doc_id", ColumnData::I64(ids[start..start + size].to_vec())),
            ("text", ColumnData::Str(texts[start..start + size].to_vec())),
        ]);
        let path = job.path(&format!("docs/year=200{f}/part-0.parquet"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        embjob::data::write_parquet(&table, &path).expect("write piece");
        start += size;
    }
    let mut labels = String::from("doc,topic\n");
    for (i, id) in ids.iter().enumerate() {
        labels.push_str(&format!("{id},t{}\n", (i * 7 / 3) % 3));
    }
    job = job.file("labels.csv", labels);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        job = job.copy(&fixture("tiny_bert").join("bert_gelu").join(f), &format!("tiny/{f}"));
    }
    job.toml(&format!(
        "[job]\nname='s'\nbackend='cpu'\nseed=3\n[input]\npath='docs'\nlayout='text'\ntext='text'\nid='doc_id'\n\
         [bow]\nweighting='tfidf'\nmin_df=2\nmax_df=0.9\nstop_words=['the','a','of']\n[pca]\nn_components=6\n\
         [contextual]\nmodel='tiny'\ntruncate=true\n[eval]\nlabels='labels.csv'\nlabels_row='doc'\n\
         labels_category='topic'\nneighbors=4\n[output]\ndir='out'\nkeep_runs=2\n{extra}"
    ))
}

/// `embjob <args…> job.toml --quiet` with the output folder `out`.
fn cmd(job: &Job, args: &[&str], out: &str) -> Outcome {
    let config = job.config();
    let out = job.path(out);
    let mut all = args.to_vec();
    all.extend([config.to_str().expect("utf-8"), "--quiet", "--output", out.to_str().expect("utf-8")]);
    embjob(&all, job.dir.path())
}

/// Every shard of an `n`-way split, then the merge, into the output folder `out`.
fn sharded_run(job: &Job, n: usize, out: &str) -> Outcome {
    for i in 0..n {
        let r = cmd(job, &["run", "--shard", &format!("{i}/{n}")], out);
        assert_eq!(r.code, 0, "shard {i}/{n}: {}", r.stderr);
    }
    cmd(job, &["merge"], out)
}

/// The metrics that are results: all but times, rates, memory, and how the encoder cut its work into batches.
fn results(run: &Path) -> Vec<(String, String, Option<i64>, u64)> {
    let m = read_parquet(&run.join("metrics.parquet"));
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let idx: Vec<Option<i64>> = m.column("index").expect("index").i64().expect("i64").iter().collect();
    // How the work was cut and shared: duplicates are found within a shard, the cache is each output folder's own.
    let chunking = [
        "seconds",
        "documents_per_second",
        "tokens_per_second",
        "peak_rss_mb",
        "batches",
        "row_groups",
        "encoded",
        "encoded_tokens",
        "from_cache",
        "duplicate_texts",
        "cache_entries",
        "cache_bytes",
    ];
    (0..m.height())
        .filter(|&r| s[r] != "efficiency" && !chunking.contains(&n[r].as_str()))
        .map(|r| (s[r].clone(), n[r].clone(), idx[r], v[r].to_bits()))
        .collect()
}

#[test]
fn a_sharded_run_equals_the_single_run_bit_for_bit_for_any_shard_count() {
    let job = sharded_job("");
    let single = cmd(&job, &["run"], "single");
    assert_eq!(single.code, 0, "{}", single.stderr);
    let one = job.path("single/latest");
    for n in [1usize, 2, 3, 7] {
        let out = format!("sharded{n}");
        let r = sharded_run(&job, n, &out);
        assert_eq!(r.code, 0, "merge of {n}: {}", r.stderr);
        let run = job.path(&format!("{out}/latest"));
        for stem in ["vocabulary", "bow", "pca_components", "pca_features", "pca_projections", "doc_neighbors"] {
            assert_same_bits(&table(&one, stem), &table(&run, stem), &format!("{stem} with {n} shards"));
        }
        assert_eq!(results(&one), results(&run), "metrics with {n} shards");
        // The text vectors stay a partitioned table, one part per shard with documents.
        assert!(run.join("text_embeddings").is_dir() && !run.join("text_embeddings.parquet").exists());
        let parts = std::fs::read_dir(run.join("text_embeddings")).expect("parts").count();
        assert_eq!(parts, n.min(5), "{n} shards: parts");
        assert_same_bits(&table(&one, "text_embeddings"), &table(&run, "text_embeddings"), "text vectors");
        // run.json fingerprints the five files and records the shards.
        let rec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("run.json")).expect("run.json")).expect("json");
        assert_eq!(rec["inputs"].as_array().expect("inputs").len(), 5);
        assert_eq!(rec["details"]["shards"]["count"], n);
        // What reads the run's tables reads the partitioned one too: the hand-off file and `neighbors`.
        let vec = std::fs::read_to_string(run.join("documents.vec")).expect("documents.vec");
        assert!(vec.starts_with("300 "), "{}", &vec[..20]);
    }
    // With 7 shards over 5 files two shards are empty; they still have manifests, and the merge took them.
    let empty: Vec<usize> = (0..7)
        .filter(|i| {
            let m: serde_json::Value = serde_json::from_slice(
                &std::fs::read(job.path(&format!("sharded7/shards/shard-{i:05}-of-00007/manifest.json")))
                    .expect("manifest"),
            )
            .expect("json");
            m["rows"] == 0
        })
        .collect();
    assert_eq!(empty.len(), 2, "{empty:?}");
    let r = embjob(
        &["neighbors", job.path("sharded3").to_str().expect("utf-8"), "3", "--table", "documents"],
        job.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("in documents (300 vectors"), "{}", r.stdout);
}

/// The shard folders under `out/shards`, hidden ones (staging) included.
fn shard_entries(job: &Job) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(job.path("out/shards"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A refused merge: exit code 3, a message naming `words`, and `latest` still where it was.
fn assert_refused(job: &Job, words: &[&str], latest: &Option<PathBuf>) {
    let r = cmd(job, &["merge"], "out");
    assert_eq!(r.code, 3, "{}", r.stderr);
    for w in words {
        assert!(r.stderr.contains(w), "{w:?} not in: {}", r.stderr);
    }
    assert_eq!(&job.latest(), latest, "a refused merge moved latest");
}

#[test]
fn the_merge_refuses_missing_shards_and_shards_of_another_split_config_or_input() {
    let job = sharded_job("");
    // Nothing to merge yet.
    let r = cmd(&job, &["merge"], "out");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no shards to merge") && r.stderr.contains("--shard"), "{}", r.stderr);
    job.assert_no_run();
    assert_eq!(sharded_run(&job, 2, "out").code, 0);
    let latest = job.latest();
    assert!(latest.is_some());

    // Shards of a 3-way split beside the 2-way one: which to merge is not guessed.
    for i in [0, 2] {
        assert_eq!(cmd(&job, &["run", "--shard", &format!("{i}/3")], "out").code, 0);
    }
    assert_refused(&job, &["2 different splits", "of 2", "of 3"], &latest);
    for i in 0..2 {
        std::fs::remove_dir_all(job.path(&format!("out/shards/shard-{i:05}-of-00002"))).expect("rm");
    }
    assert_refused(&job, &["1 of 3 shards missing (shard 1)", "--shard I/3"], &latest);
    assert_eq!(cmd(&job, &["run", "--shard", "1/3"], "out").code, 0);
    assert_eq!(cmd(&job, &["merge"], "out").code, 0);
    let latest = job.latest();

    // Another tokenizer setting: the shards' counts no longer hold; [pca] applies in the merge and may change.
    job.rewrite_toml(|t| t.replace("min_df=2", "min_df=3"));
    assert_refused(&job, &["shard 0/3", "[input], [bow] or [contextual]", "rerun it"], &latest);
    job.rewrite_toml(|t| t.replace("min_df=3", "min_df=2").replace("n_components=6", "n_components=4"));
    assert_eq!(cmd(&job, &["merge"], "out").code, 0);
    let latest = job.latest();

    // The input changed after the shards read it: a file rewritten, a file added.
    let piece = job.path("docs/year=2002/part-0.parquet");
    let original = std::fs::read(&piece).expect("piece");
    let df = read_parquet(&piece);
    let fewer = Table::new(vec![
        ("doc_id", ColumnData::I64(i64s(&df, "doc_id")[..100].to_vec())),
        ("text", ColumnData::Str(strs(&df, "text")[..100].to_vec())),
    ]);
    embjob::data::write_parquet(&fewer, &piece).expect("rewrite");
    assert_refused(&job, &["read another input", "year=2002/part-0.parquet changed since the shard read it"], &latest);
    std::fs::write(&piece, &original).expect("restore");
    let extra = job.path("docs/year=2005/part-0.parquet");
    std::fs::create_dir_all(extra.parent().expect("parent")).expect("mkdir");
    embjob::data::write_parquet(&fewer, &extra).expect("add");
    let r = cmd(&job, &["merge"], "out");
    assert_eq!(r.code, 3, "{}", r.stderr);
    std::fs::remove_dir_all(extra.parent().expect("parent")).expect("rm");
    // A restored file has a new modification time: still another input until its shard reruns.
    assert_refused(&job, &["year=2002/part-0.parquet changed"], &latest);
    for i in 0..3 {
        assert_eq!(cmd(&job, &["run", "--shard", &format!("{i}/3")], "out").code, 0);
    }
    assert_eq!(cmd(&job, &["merge"], "out").code, 0);
}

#[test]
fn ids_repeated_across_shards_are_refused_as_in_a_single_run() {
    let job = sharded_job("");
    // The last file repeats the first file's ids.
    let first = read_parquet(&job.path("docs/year=2000/part-0.parquet"));
    let last = job.path("docs/year=2004/part-0.parquet");
    let n = read_parquet(&last).height();
    let clash = Table::new(vec![
        ("doc_id", ColumnData::I64(i64s(&first, "doc_id")[..n].to_vec())),
        ("text", ColumnData::Str(strs(&read_parquet(&last), "text"))),
    ]);
    embjob::data::write_parquet(&clash, &last).expect("write");
    let single = cmd(&job, &["run"], "single");
    assert_eq!(single.code, 3);
    let merged = sharded_run(&job, 2, "out");
    assert_eq!(merged.code, 3, "{}", merged.stderr);
    for r in [&single, &merged] {
        assert!(
            r.stderr.contains("column 'doc_id'") && r.stderr.contains("appears on more than one row"),
            "{}",
            r.stderr
        );
    }
    job.assert_no_run();
}

#[test]
fn only_text_jobs_are_sharded() {
    let job = long_job("");
    for args in [&["run", "--shard", "0/2"][..], &["merge"]] {
        let r = cmd(&job, args, "out");
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("input.layout") && r.stderr.contains("split text jobs"), "{}", r.stderr);
    }
    for bad in ["3/3", "1", "x/2"] {
        let r = cmd(&job, &["run", "--shard", bad], "out");
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("INDEX/COUNT"), "{}", r.stderr);
    }
}

/// Every file of each shard folder, with its bytes (manifests without their timing).
fn shard_bytes(job: &Job) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in shard_entries(job) {
        let dir = job.path(&format!("out/shards/{name}"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("e").path()).collect();
        files.sort();
        for f in files {
            let mut bytes = std::fs::read(&f).expect("read");
            if f.ends_with("manifest.json") {
                let mut m: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest");
                m["seconds"] = serde_json::Value::Null;
                m["encode_seconds"] = serde_json::Value::Null;
                bytes = serde_json::to_vec(&m).expect("json");
            }
            out.push((format!("{name}/{}", f.file_name().expect("name").to_string_lossy()), bytes));
        }
    }
    out
}

/// The same files with the same bytes (the names of those that differ otherwise).
fn assert_same_files(now: &[(String, Vec<u8>)], before: &[(String, Vec<u8>)], what: &str) {
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(now), names(before), "{what}: files");
    let differ: Vec<&str> = now.iter().zip(before).filter(|(a, b)| a.1 != b.1).map(|(a, _)| a.0.as_str()).collect();
    assert!(differ.is_empty(), "{what}: other bytes in {differ:?}");
}

#[test]
fn a_retried_shard_rewrites_the_same_bytes_and_a_killed_one_leaves_no_partial_shard() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let job = sharded_job("");
    for i in 0..2 {
        assert_eq!(cmd(&job, &["run", "--shard", &format!("{i}/2")], "out").code, 0);
    }
    let first = shard_bytes(&job);
    assert!(first.iter().any(|(n, _)| n.ends_with("text_embeddings.parquet")));
    let t = Instant::now();
    assert_eq!(cmd(&job, &["run", "--shard", "0/2"], "out").code, 0);
    let full = t.elapsed().as_millis() as u64;
    assert_same_files(&shard_bytes(&job), &first, "a retried shard");
    assert_eq!(shard_entries(&job), ["shard-00000-of-00002", "shard-00001-of-00002"]);

    // Killed at moments spread over a task: the shard is the complete earlier copy, or (removed first) absent or
    // complete; never a partial folder under its name.
    let mut rng = embjob::linalg::rng::SplitMix::new(11);
    std::fs::remove_dir_all(job.path("out/shards/shard-00001-of-00002")).expect("rm");
    for k in 0..8 {
        let child = Command::new(env!("CARGO_BIN_EXE_embjob"))
            .args(["run", job.config().to_str().expect("utf-8"), "--quiet", "--shard", &format!("{}/2", k % 2)])
            .current_dir(job.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(rng.below(full.max(50) as usize) as u64));
        let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
        let _ = child.wait_with_output();
        for name in shard_entries(&job).iter().filter(|n| !n.starts_with('.')) {
            let dir = job.path(&format!("out/shards/{name}"));
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("a shard without manifest"))
                    .expect("manifest");
            for w in m["written"].as_array().expect("written") {
                let size = std::fs::metadata(dir.join(w[0].as_str().expect("name"))).expect("file").len();
                assert_eq!(size, w[1].as_u64().expect("bytes"), "kill {k}: {name}");
            }
        }
    }
    // The next task removes what killed ones left, and the merge works on the retried shards.
    for i in 0..2 {
        assert_eq!(cmd(&job, &["run", "--shard", &format!("{i}/2")], "out").code, 0);
    }
    assert_eq!(shard_entries(&job), ["shard-00000-of-00002", "shard-00001-of-00002"], "debris after retries");
    assert_same_files(&shard_bytes(&job), &first, "shards rerun after kills");
    let r = cmd(&job, &["merge"], "out");
    assert_eq!(r.code, 0, "{}", r.stderr);
}
