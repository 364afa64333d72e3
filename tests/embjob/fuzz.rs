//! A seeded mutation fuzzer for the config parser and for CSV / Parquet ingest: valid files with bytes flipped,
//! inserted, deleted or repeated must give a result or an error, never a panic. CI runs a few hundred cases per
//! target; `EMBJOB_FUZZ_ITERATIONS=N` runs more, `EMBJOB_FUZZ_SECONDS=S` stops a target after S seconds and
//! `EMBJOB_FUZZ_SEED=N` starts another sequence (the issue notes give the long runs' lengths and findings).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use embjob::linalg::rng::SplitMix;
use embjob::plan::config::{Config, Format};
use embjob::plan::{InputColumns, InputSpec};

use crate::support::*;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Case numbers to run: `EMBJOB_FUZZ_ITERATIONS` (300 by default), cut short after `EMBJOB_FUZZ_SECONDS`.
fn cases() -> impl Iterator<Item = usize> {
    let deadline =
        env_number("EMBJOB_FUZZ_SECONDS").map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s));
    (0..env_number("EMBJOB_FUZZ_ITERATIONS").unwrap_or(300) as usize)
        .take_while(move |_| deadline.is_none_or(|d| std::time::Instant::now() < d))
}

fn rng(seed: u64) -> SplitMix {
    SplitMix::new(seed ^ env_number("EMBJOB_FUZZ_SEED").unwrap_or(0))
}

/// A mutated copy of `seed`: 1–4 random edits.
fn mutate(rng: &mut SplitMix, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if v.is_empty() { 0 } else { rng.below(v.len()) };
        match rng.below(6) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 => v.insert(at, b"\"'=[]{},.\n\r\0\xff#-1e9"[rng.below(17)]),
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            3 if !v.is_empty() => {
                let end = (at + 1 + rng.below(32)).min(v.len());
                let chunk = v[at..end].to_vec();
                v.splice(at..at, chunk);
            }
            4 => v.truncate(at),
            _ => {
                if !v.is_empty() {
                    v[at] = rng.below(256) as u8;
                }
            }
        }
    }
    v
}

#[test]
fn mutated_configs_never_panic() {
    let seeds: Vec<Vec<u8>> = ["pipelines/food.toml", "pipelines/movielens.toml"]
        .iter()
        .map(|p| std::fs::read(repo().join(p)).expect("seed"))
        .collect();
    let mut rng = rng(0xf022);
    let mut done = 0;
    for i in cases() {
        done += 1;
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let text = String::from_utf8_lossy(&input).into_owned();
        let file = repo().join("pipelines/fuzz.toml");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(config) = Config::from_toml(&text, &file) {
                let _ = embjob::job::load::plan_from(config, &file, &Default::default());
            }
        }));
        assert!(outcome.is_ok(), "case {i} panicked on:\n{text}");
    }
    eprintln!("config fuzzing: {done} cases, no panic");
    assert!(done > 0);
}

/// Reads the file with one layout; whether it succeeded.
fn read(path: &Path, format: Format, columns: InputColumns) -> bool {
    let plan = InputSpec::file(path.to_owned(), format, columns, b',');
    embjob::data::read_input(&plan).is_ok()
}

#[test]
fn mutated_inputs_never_panic() {
    // Inputs are written under target/ so that the last one survives a process abort (an allocation failure inside
    // a reader cannot be caught): target/fuzz-last-<thread>.{csv,parquet}.
    let dir = repo().join("target").join(format!("fuzz-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let csv_all = std::fs::read(repo().join("pipelines/data/food_favorites.csv")).expect("csv");
    let cut = csv_all[..2000].iter().rposition(|&b| b == b'\n').map_or(2000, |p| p + 1);
    let csv_seed = csv_all[..cut].to_vec();
    // A compressed real file, and two small uncompressed ones (v1 and v2 data pages, dictionaries, nulls, several row
    // groups) whose page headers and encodings mutations reach directly.
    let parquet_seeds: Vec<Vec<u8>> = ["fastfood_complete.parquet", "fuzz_seed_v1.parquet", "fuzz_seed_v2.parquet"]
        .iter()
        .map(|f| std::fs::read(fixture(f)).expect("parquet"))
        .collect();
    let long = |weight: Option<&str>| InputColumns::Long {
        user: "user_id".into(),
        item: "item".into(),
        order: Some("rank".into()),
        weight: weight.map(String::from),
    };
    let numeric = |exclude: &[&str]| InputColumns::Numeric {
        columns: None,
        id: None,
        exclude: exclude.iter().map(|c| c.to_string()).collect(),
    };
    let text = || InputColumns::Text { text: "item".into(), id: None };
    // Each case's seed, format, file name and the layouts its unmutated seed reads with.
    let case = |i: usize| {
        if i.is_multiple_of(2) {
            (&csv_seed, Format::Csv, "f.csv", vec![long(None), numeric(&["item"]), text()])
        } else {
            let s = (i / 2) % parquet_seeds.len();
            let layouts = if s == 0 {
                vec![numeric(&["restaurant", "item", "salad"])]
            } else {
                vec![long(Some("weight")), numeric(&["item"]), text()]
            };
            (&parquet_seeds[s], Format::Parquet, "f.parquet", layouts)
        }
    };
    for i in 0..2 * parquet_seeds.len() {
        let (seed, format, name, layouts) = case(i);
        let path = dir.join(name);
        std::fs::write(&path, seed).expect("write");
        for columns in layouts {
            let plan = InputSpec::file(path.clone(), format, columns, b',');
            let read = embjob::data::read_input(&plan);
            assert!(read.is_ok(), "seed {i}: {:?}", read.err());
        }
    }
    let mut rng = rng(0x1a9e57);
    let (mut done, mut reads, mut read_ok) = (0, 0, 0);
    for i in cases() {
        done += 1;
        let (seed, format, name, layouts) = case(i);
        let bytes = mutate(&mut rng, seed);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        for columns in layouts {
            let outcome = catch_unwind(AssertUnwindSafe(|| read(&path, format, columns.clone())));
            reads += 1;
            read_ok += usize::from(matches!(outcome, Ok(true)));
            if let Err(payload) = &outcome {
                let keep = repo().join("target").join(format!("fuzz-crash-{i}-{name}"));
                let kept = std::fs::write(&keep, &bytes);
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "case {i} ({name}, {columns:?}) panicked: {message}; input kept at {} ({kept:?})",
                    keep.display()
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("ingest fuzzing: {done} files, {reads} reads, {read_ok} succeeded, the rest were errors, no panic");
    assert!(done > 0);
}
