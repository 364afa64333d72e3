//! The encoder cache: a nightly run encodes only what changed and writes what a run without the cache writes, bit
//! for bit, on each backend; duplicates are encoded once; the cache does not lie (corrupted, truncated, foreign and
//! other-key segments are skipped with a notice naming them), survives a kill, two runs at once and a full disk;
//! it is compacted past 16 segments and expires unused segments; shards read it and the merge publishes into it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use embjob::data::table::{ColumnData, Table};

use crate::support::*;

/// The Lee corpus' first `n` documents (tests/fixtures/lee_docs.parquet: real news, 7 repeated texts among 300).
fn lee(n: usize) -> (Vec<i64>, Vec<String>) {
    let df = read_parquet(&fixture("lee_docs.parquet"));
    let (ids, texts) = (i64s(&df, "doc_id"), strs(&df, "text"));
    (ids[..n].to_vec(), texts[..n].to_vec())
}

fn write_docs(job: &Job, ids: &[i64], texts: &[String]) {
    let table = Table::new(vec![("doc_id", ColumnData::I64(ids.to_vec())), ("text", ColumnData::Str(texts.to_vec()))]);
    embjob::data::write_parquet(&table, &job.path("docs.parquet")).expect("write docs");
}

/// A text job over `docs.parquet` (the first `n` Lee documents): bag-of-words, PCA and contextual vectors from the
/// tiny BERT model, cut at 16 tokens, in batches of 64 tokens (several batches and windows).
fn cached_job(n: usize, backend: &str, extra: &str) -> Job {
    let mut job = Job::new();
    let (ids, texts) = lee(n);
    write_docs(&job, &ids, &texts);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        job = job.copy(&fixture("tiny_bert").join("bert_gelu").join(f), &format!("tiny/{f}"));
    }
    job.toml(&format!(
        "[job]\nname='n'\nbackend='{backend}'\nseed=5\n[input]\npath='docs.parquet'\nlayout='text'\ntext='text'\n\
         id='doc_id'\n[bow]\nmin_df=2\n[pca]\nn_components=4\n[contextual]\nmodel='tiny'\nmax_tokens=16\n\
         batch_tokens=64\n[output]\ndir='out'\nkeep_runs=3\n{extra}"
    ))
}

/// Appends documents to the job's input: `new` of the Lee corpus after the first `n`, and copies of rows `repeat`.
fn append(job: &Job, n: usize, new: usize, repeat: &[usize]) {
    let (mut ids, mut texts) = lee(n + new);
    for (i, &r) in repeat.iter().enumerate() {
        ids.push(10_000 + i as i64);
        texts.push(texts[r].clone());
    }
    write_docs(job, &ids, &texts);
}

/// A contextual metric of a run folder.
fn metric(run: &Path, name: &str) -> f64 {
    let m = read_parquet(&run.join("metrics.parquet"));
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    (0..m.height())
        .find(|&i| s[i] == "contextual" && n[i] == name)
        .map(|i| v[i])
        .unwrap_or_else(|| panic!("no contextual metric {name}"))
}

/// Distinct texts among `texts`.
fn distinct(texts: &[String]) -> usize {
    texts.iter().collect::<std::collections::HashSet<_>>().len()
}

/// Every table of two runs equal bit for bit (metrics: the counts that do not depend on the cache).
fn assert_same_outputs(a: &Path, b: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(a)
        .expect("run folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet") && n != "metrics.parquet")
        .collect();
    names.sort();
    assert!(names.contains(&"text_embeddings.parquet".to_owned()), "{names:?}");
    for name in names {
        let stem = name.trim_end_matches(".parquet");
        assert_same_bits(&table(a, stem), &table(b, stem), &name);
    }
    for m in ["documents", "tokens", "truncated_documents", "embedding_dim"] {
        assert_eq!(metric(a, m).to_bits(), metric(b, m).to_bits(), "metric {m}");
    }
}

/// The segments of the job's cache (every key folder), by name.
fn segments(cache: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for key in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(key.path()).into_iter().flatten().flatten() {
            if f.file_name().to_string_lossy().starts_with("seg-") {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Appending rows to the input, then running again: only the new texts are encoded, and every output equals a run
/// without the cache, bit for bit.
fn a_second_run_encodes_only_the_new_rows_and_equals_a_run_without_the_cache(backend: &str) {
    let job = cached_job(150, backend, "");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let first = job.out().join("latest");
    let (_, texts) = lee(150);
    assert_eq!(metric(&first, "encoded"), distinct(&texts) as f64);
    assert_eq!(metric(&first, "duplicate_texts"), (150 - distinct(&texts)) as f64);
    assert_eq!(metric(&first, "from_cache"), 0.0);
    assert!(metric(&first, "truncated_documents") > 0.0, "some documents are longer than 16 tokens");

    // The same input again: nothing encoded, and the summary says so.
    let again = job.run_loud(&[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let line = format!("150 documents, {} from the cache, 0 encoded", distinct(&texts));
    assert!(again.stderr.contains(&line), "{line:?} not in: {}", again.stderr);

    // 40 new documents, and 3 repeats of earlier ones (one repeated twice).
    append(&job, 150, 40, &[3, 77, 77]);
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let second = job.out().join("latest");
    let (_, all) = lee(190);
    let old: std::collections::HashSet<&String> = texts.iter().collect();
    let new = all.iter().filter(|t| !old.contains(t)).collect::<std::collections::HashSet<_>>().len();
    assert!(new > 30, "the appended documents are new texts");
    assert_eq!(metric(&second, "encoded"), new as f64, "only the new texts are encoded");
    assert_eq!(metric(&second, "from_cache"), distinct(&texts) as f64);
    assert_eq!(metric(&second, "documents"), 193.0);

    let fresh = job.run(&["--no-cache", "--output", "fresh"]);
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    let fresh = job.path("fresh/latest");
    assert_eq!(metric(&fresh, "from_cache"), 0.0);
    assert_eq!(metric(&fresh, "encoded"), (new + distinct(&texts)) as f64, "duplicates are encoded once");
    assert_same_outputs(&second, &fresh);
    assert!(!job.path("fresh/cache").exists(), "--no-cache made a cache folder");
}

#[test]
fn a_second_run_encodes_only_the_new_rows_and_equals_a_run_without_the_cache_on_the_cpu() {
    a_second_run_encodes_only_the_new_rows_and_equals_a_run_without_the_cache("cpu");
}

#[test]
fn a_second_run_encodes_only_the_new_rows_and_equals_a_run_without_the_cache_on_the_gpu() {
    if gpu_backend().is_some() {
        a_second_run_encodes_only_the_new_rows_and_equals_a_run_without_the_cache("gpu");
    }
}

#[test]
fn damaged_foreign_and_other_key_segments_are_skipped_with_a_notice_and_never_read() {
    let job = cached_job(60, "cpu", "");
    assert_eq!(job.run(&[]).code, 0);
    let seg = segments(&job.out().join("cache")).pop().expect("a segment");
    let folder = seg.parent().expect("key folder").to_owned();
    let good = std::fs::read(&seg).expect("read segment");
    let reference = job.run(&["--no-cache", "--output", "fresh"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let distinct60 = distinct(&lee(60).1) as f64;

    // Each damage in turn: the run names the file, encodes every document again, and writes what a run without
    // the cache writes.
    let segment_name = |bytes: &[u8]| {
        use sha2::Digest;
        let sha = sha2::Sha256::digest(bytes);
        folder.join(format!("seg-{}.parquet", sha.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    };
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let truncated = good[..good.len() / 2].to_vec();
    // Another key's segment, under a name that matches its bytes: made by a run with another max_tokens.
    let other = cached_job(60, "cpu", "").edit_toml("max_tokens=16", "max_tokens=12");
    assert_eq!(other.run(&[]).code, 0);
    let other_bytes = std::fs::read(segments(&other.out().join("cache")).pop().expect("segment")).expect("read");
    let cases: Vec<(&str, PathBuf, Vec<u8>, &str)> = vec![
        ("flipped byte", seg.clone(), flipped, "do not match its checksum"),
        ("truncated, renamed to its checksum", segment_name(&truncated), truncated, "cannot read"),
        ("foreign file", folder.join("notes.txt"), b"not ours".to_vec(), "not a cache segment"),
        ("another key's segment", segment_name(&other_bytes), other_bytes, "another cache key"),
    ];
    for (what, path, bytes, why) in cases {
        for s in segments(&job.out().join("cache")) {
            std::fs::remove_file(s).expect("rm");
        }
        std::fs::write(&path, &bytes).expect("damage");
        let r = job.run_loud(&[]);
        assert_eq!(r.code, 0, "{what}: {}", r.stderr);
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        assert!(
            r.stderr.lines().any(|l| l.contains("cache: skipped") && l.contains(&name) && l.contains(why)),
            "{what}: no notice naming {name} ({why}): {}",
            r.stderr
        );
        let latest = job.out().join("latest");
        assert_eq!(metric(&latest, "from_cache"), 0.0, "{what}");
        assert_eq!(metric(&latest, "encoded"), distinct60, "{what}");
        assert_same_outputs(&latest, &job.path("fresh/latest"));
        let _ = std::fs::remove_file(&path);
    }
}

fn spawn(job: &Job) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_embjob"))
        .args(["run", job.config().to_str().expect("utf-8"), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn embjob")
}

/// Every segment's bytes hash to its name, and nothing else is in a key folder but key.json, the lock and files
/// still incoming (which no run reads: a run killed between its two steps of publishing leaves one).
fn assert_cache_sound(cache: &Path) {
    use sha2::Digest;
    for key in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(key.path()).expect("key folder").flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_prefix("seg-").and_then(|n| n.strip_suffix(".parquet")) {
                let sha = sha2::Sha256::digest(std::fs::read(f.path()).expect("read"));
                let got: String = sha.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(got, hex, "{name}: bytes and name differ");
            } else {
                let ours = name == "key.json" || name == ".lock" || name.starts_with(".incoming-");
                assert!(ours, "left in the cache: {name}");
            }
        }
    }
}

/// True once a staging folder of the job holds the run's cache segment being written.
fn writing_its_segment(job: &Job) -> bool {
    std::fs::read_dir(job.out().join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join(embjob::stages::vector_cache::STAGED_FILE).exists())
}

#[test]
fn a_killed_run_leaves_the_cache_as_it_was() {
    let job = cached_job(300, "cpu", "");
    assert_eq!(job.run(&[]).code, 0);
    let cache = job.out().join("cache");
    let (ids, texts) = lee(300);
    // Each run gets 900 new texts to encode and publish. It is killed while it writes its segment, then at
    // moments spread over the run.
    let moments: [Option<u64>; 5] = [None, Some(100), Some(600), Some(1500), Some(3000)];
    for (i, moment) in moments.into_iter().enumerate() {
        let revised: Vec<String> =
            (0..3).flat_map(|v| texts.iter().map(move |t| format!("{t} (revision {i}.{v})"))).collect();
        let all_ids: Vec<i64> = (0..3).flat_map(|v| ids.iter().map(move |d| d + 1000 * v)).collect();
        write_docs(&job, &all_ids, &revised);
        let (latest, before) = (job.latest(), segments(&cache));
        let mut child = spawn(&job);
        match moment {
            Some(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            None => {
                let t = std::time::Instant::now();
                while !writing_its_segment(&job) {
                    assert!(child.try_wait().expect("wait").is_none(), "the run ended before writing its segment");
                    assert!(t.elapsed().as_secs() < 60, "no segment after 60 s");
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_cache_sound(&cache);
        if job.latest() == latest {
            assert_eq!(segments(&cache), before, "killed at {moment:?}: the cache changed without a commit");
        }
    }
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_cache_sound(&cache);
    let fresh = job.run(&["--no-cache", "--output", "fresh"]);
    assert_eq!(fresh.code, 0, "{}", fresh.stderr);
    assert_same_outputs(&job.out().join("latest"), &job.path("fresh/latest"));
}

#[test]
fn two_runs_at_once_share_one_cache_folder_without_damage() {
    // Two jobs with their own output folders and one cache_dir, started together: first cold, then with 50 new
    // documents each.
    let shared = tempfile::tempdir().expect("temp dir");
    let extra = format!("cache_dir='{}'", shared.path().display());
    let (a, b) = (cached_job(200, "cpu", &extra), cached_job(200, "cpu", &extra));
    for round in 0..2 {
        if round == 1 {
            append(&a, 200, 50, &[]);
            append(&b, 200, 50, &[]);
        }
        let (mut pa, mut pb) = (spawn(&a), spawn(&b));
        let (ra, rb) = (pa.wait().expect("wait a"), pb.wait().expect("wait b"));
        let mut err = String::new();
        for p in [&mut pa, &mut pb] {
            if let Some(mut e) = p.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
            }
        }
        assert!(ra.success() && rb.success(), "round {round}: {err}");
        assert_cache_sound(shared.path());
    }
    // A third run of either finds every text, and both equal a run without the cache.
    let r = a.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(metric(&a.out().join("latest"), "encoded"), 0.0);
    let fresh = a.run(&["--no-cache", "--output", "fresh"]);
    assert_eq!(fresh.code, 0);
    assert_same_outputs(&a.out().join("latest"), &a.path("fresh/latest"));
    assert_same_outputs(&b.out().join("latest"), &a.path("fresh/latest"));
}

#[test]
fn more_than_16_segments_are_compacted_into_one_and_unused_segments_expire() {
    let job = cached_job(100, "cpu", "cache_keep_days=7");
    let cache = job.out().join("cache");
    // 18 runs, each with one more document (a segment each when its text is new): compacted into one when the
    // 17th appears.
    let mut published = 0;
    for k in 0..18 {
        append(&job, 82, k, &[]);
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        published += usize::from(metric(&job.out().join("latest"), "encoded") > 0.0);
        let n = segments(&cache).len();
        assert!(n <= embjob::stages::vector_cache::MAX_SEGMENTS, "run {k}: {n} segments");
    }
    assert!(published > 16, "{published} segments were published");
    assert_eq!(segments(&cache).len(), published - 16, "17 compacted into 1, then one per run");
    assert_cache_sound(&cache);
    let r = job.run(&[]);
    assert_eq!(r.code, 0);
    assert_eq!(metric(&job.out().join("latest"), "encoded"), 0.0, "compaction kept every text");
    let fresh = job.run(&["--no-cache", "--output", "fresh"]);
    assert_eq!(fresh.code, 0);
    assert_same_outputs(&job.out().join("latest"), &job.path("fresh/latest"));

    // Another input: the old segments are not used; aged past cache_keep_days, the next run removes them.
    let old = segments(&cache);
    for s in &old {
        let f = std::fs::File::options().write(true).open(s).expect("open");
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400)).expect("age");
    }
    // A folder of another key (a model no run uses any more), as old: its segments expire too, its key.json stays.
    let key_dir = old[0].parent().expect("key folder").to_owned();
    let other = cache.join("ffffffffffffffff");
    std::fs::create_dir_all(&other).expect("mkdir");
    std::fs::copy(key_dir.join("key.json"), other.join("key.json")).expect("key.json");
    for s in &old {
        let copy = other.join(s.file_name().expect("name"));
        std::fs::copy(s, &copy).expect("copy");
        let f = std::fs::File::options().write(true).open(&copy).expect("open");
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(8 * 86_400)).expect("age");
    }
    let (ids, texts) = lee(50);
    let texts: Vec<String> = texts.iter().map(|t| format!("{t} (new)")).collect();
    write_docs(&job, &ids, &texts);
    assert_eq!(job.run(&[]).code, 0);
    let now = segments(&cache);
    assert!(old.iter().all(|s| !now.contains(s)), "expired segments remain: {now:?}");
    assert_eq!(now.len(), 1, "{now:?}");
    assert!(other.join("key.json").is_file());
    let left: Vec<_> = std::fs::read_dir(&other).expect("list").flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with("seg-")), "other key's segments remain: {left:?}");
}

#[test]
fn a_full_disk_under_the_cache_fails_the_run_and_leaves_the_cache_unchanged() {
    let job = cached_job(300, "cpu", "cache_dir='cache'");
    let cache = job.path("cache");
    // A 16 KiB tmpfs as the cache folder: key.json fits, the 300 documents' segment does not.
    let Some(tmpfs) = SmallTmpfs::mount(&cache, "16k") else { return };
    let r = job.run(&[]);
    let listing: Vec<String> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|k| std::fs::read_dir(k.path()).into_iter().flatten().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .collect();
    drop(tmpfs);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("No space left") && r.stderr.contains("cache segment"), "{}", r.stderr);
    job.assert_no_run();
    let mut listing = listing;
    listing.sort();
    assert_eq!(listing, [".lock", "key.json"], "the cache holds more than before the run");
}

#[test]
fn shard_tasks_read_the_cache_and_the_merge_publishes_what_they_encoded() {
    let job = cached_job(120, "cpu", "").edit_toml("path='docs.parquet'", "path='docs'");
    let (ids, texts) = lee(120);
    for (f, range) in [(0, 0..70), (1, 70..120)] {
        let table = Table::new(vec![
            ("doc_id", ColumnData::I64(ids[range.clone()].to_vec())),
            ("text", ColumnData::Str(texts[range].to_vec())),
        ]);
        let path = job.path(&format!("docs/part-{f}.parquet"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        embjob::data::write_parquet(&table, &path).expect("write part");
    }
    let cmd = |args: &[&str]| {
        let mut all = args.to_vec();
        let config = job.config();
        all.extend([config.to_str().expect("utf-8"), "--quiet"]);
        embjob(&all, job.dir.path())
    };
    let round = || {
        for i in 0..2 {
            let r = cmd(&["run", "--shard", &format!("{i}/2")]);
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let r = cmd(&["merge"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    };
    round();
    let cache = job.out().join("cache");
    assert!(!segments(&cache).is_empty(), "the merge published the shards' vectors");
    assert_cache_sound(&cache);
    round();
    assert_eq!(metric(&job.out().join("latest"), "encoded"), 0.0, "the second round's shards found every text");
    let latest = job.out().join("latest");
    assert_eq!(metric(&latest, "from_cache") + metric(&latest, "duplicate_texts"), 120.0);
}

#[test]
fn the_cache_is_configured_strictly_recorded_and_shown() {
    let job = cached_job(20, "cpu", "cache_keep_days=0");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("output.cache_keep_days"), "{}", r.stderr);

    let job = cached_job(20, "cpu", "").edit_toml("batch_tokens=64", "batch_tokens=64\ncache=false");
    assert_eq!(job.run(&[]).code, 0);
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.out().join("latest/run.json")).expect("run.json")).expect("json");
    assert_eq!(run["details"]["contextual"]["cache"]["off"], "contextual.cache = false");
    assert!(!job.out().join("cache").exists());

    let job = cached_job(20, "cpu", "");
    assert_eq!(job.run(&[]).code, 0);
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.out().join("latest/run.json")).expect("run.json")).expect("json");
    let c = &run["details"]["contextual"]["cache"];
    assert_eq!(c["key_parts"]["max_tokens"], 16, "{c}");
    assert_eq!(c["key_parts"]["backend"], "cpu", "{c}");
    assert!(c["key_parts"]["model_files_sha256"]["model.safetensors"].as_str().is_some_and(|s| s.len() == 64));
    assert_eq!(c["entries"].as_u64(), Some(distinct(&lee(20).1) as u64), "{c}");
    let shown = embjob(&["show", job.out().join("latest").to_str().expect("utf-8")], job.dir.path());
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("cache: 0 of 20 documents from the cache"), "{}", shown.stdout);
}
