//! A seeded mutation fuzzer for the config parser and for CSV / Parquet ingest: valid files with bytes flipped,
//! inserted, deleted or repeated must give a result or an error, never a panic. CI runs a few hundred cases per
//! target; `EMBJOB_FUZZ_ITERATIONS=N` runs more (the issue notes give the long run's length and findings).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use embjob::config::{Config, Format};
use embjob::plan::{InputColumns, InputPlan};
use embjob::rng::SplitMix;

use crate::support::*;

fn iterations() -> usize {
    std::env::var("EMBJOB_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
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
    let mut rng = SplitMix::new(0xf022);
    for i in 0..iterations() {
        let input = mutate(&mut rng, &seeds[i % seeds.len()]);
        let text = String::from_utf8_lossy(&input).into_owned();
        let file = repo().join("pipelines/fuzz.toml");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(config) = Config::from_toml(&text, &file) {
                let _ = embjob::Plan::from_config(config, &file, &Default::default());
            }
        }));
        assert!(outcome.is_ok(), "case {i} panicked on:\n{text}");
    }
}

fn read(path: &Path, format: Format, columns: InputColumns) {
    let plan = InputPlan { path: path.to_owned(), format, columns, separator: b',' };
    let _ = embjob::data::read_input(&plan);
}

#[test]
fn mutated_inputs_never_panic() {
    // Inputs are written under target/ so that the last one survives a process abort (an allocation failure inside
    // a reader cannot be caught): target/fuzz-last-<thread>.{csv,parquet}.
    let dir = repo().join("target").join(format!("fuzz-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let csv_seed: Vec<u8> =
        std::fs::read(repo().join("pipelines/data/food_favorites.csv")).expect("csv")[..2000].to_vec();
    let parquet_seed = std::fs::read(fixture("fastfood.parquet")).expect("parquet");
    let layouts = || {
        [
            InputColumns::Long {
                user: "user_id".into(),
                item: "item".into(),
                order: Some("rank".into()),
                weight: None,
            },
            InputColumns::Numeric { columns: None, id: None, exclude: vec![] },
            InputColumns::Text { text: "item".into(), id: Some("user_id".into()) },
        ]
    };
    let mut rng = SplitMix::new(0x1a9e57);
    for i in 0..iterations() {
        let (seed, format, name) =
            if i % 2 == 0 { (&csv_seed, Format::Csv, "f.csv") } else { (&parquet_seed, Format::Parquet, "f.parquet") };
        let bytes = mutate(&mut rng, seed);
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write");
        for columns in layouts() {
            let outcome = catch_unwind(AssertUnwindSafe(|| read(&path, format, columns.clone())));
            if outcome.is_err() {
                let keep = repo().join("target").join(format!("fuzz-crash-{i}-{name}"));
                let _ = std::fs::write(&keep, &bytes);
                panic!("case {i} ({name}, {columns:?}) panicked; input kept at {}", keep.display());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
