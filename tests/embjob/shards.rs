//! Sharded runs: `embjob run --shard i/N` on each share of a many-file text input, then `embjob merge`, give the
//! single run's results bit for bit (vocabulary, BoW, PCA, document neighbours and their scores, metrics; the text
//! vectors as a partitioned table), for any N, empty shards included. The merge refuses, naming them, missing
//! shards, shards of another config or input, and a mix of splits; a retried or killed shard task leaves a complete
//! shard or none.

use std::path::{Path, PathBuf};

use embjob::table::{ColumnData, Table};
use polars::prelude::*;

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

/// A Parquet table of a run: a file, or the folder of its parts stacked in name order.
fn table(run: &Path, stem: &str) -> DataFrame {
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
fn assert_same_bits(a: &DataFrame, b: &DataFrame, what: &str) {
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

/// The metrics that are results: all but times, rates, memory, and how the encoder cut its work into batches.
fn results(run: &Path) -> Vec<(String, String, Option<i64>, u64)> {
    let m = read_parquet(&run.join("metrics.parquet"));
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let idx: Vec<Option<i64>> = m.column("index").expect("index").i64().expect("i64").iter().collect();
    let chunking = ["seconds", "documents_per_second", "tokens_per_second", "peak_rss_mb", "batches", "row_groups"];
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
