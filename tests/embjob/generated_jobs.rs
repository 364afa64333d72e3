//! Property tests (proptest) of the whole job on generated input: long-layout tables whose cells may be any
//! integer, float (NaN and infinities included), empty, quoted or non-ASCII, with ragged rows; and configs whose
//! numeric keys take any value, sensible or not. Every run ends in a result or an error, never a panic; a failed
//! run leaves no run folder and no `latest`; a successful one leaves `latest` with its metrics. Cases:
//! `PROPTEST_CASES` (48 by default).

use std::panic::{catch_unwind, AssertUnwindSafe};

use proptest::prelude::*;
use proptest::sample::select;

/// A cell of a clean table (column by column: user, item, rank, weight) or any cell at all.
fn cell(column: usize, wild: bool) -> BoxedStrategy<String> {
    let clean = match column {
        0 => (1i64..8).prop_map(|v| v.to_string()).boxed(),
        1 => select(vec!["apple", "pear", "plum", "fig", "kiwi", "lime"]).prop_map(String::from).boxed(),
        2 => (0i64..5).prop_map(|v| v.to_string()).boxed(),
        _ => (0.1f64..3.0).prop_map(|v| format!("{v:.3}")).boxed(),
    };
    if !wild {
        return clean;
    }
    prop_oneof![
        12 => clean,
        1 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(|v| format!("{v}")),
        1 => select(vec!["", "NaN", "inf", "-inf", "-0", "1e308", "\"a,b\"", "é", "x y", "0"]).prop_map(String::from),
    ]
    .boxed()
}

/// A table with the header `user_id,item,rank,weight`: clean (half the cases) or with odd cells and ragged rows.
fn table() -> impl Strategy<Value = String> {
    any::<bool>().prop_flat_map(|wild| {
        let row = (0..4).map(|c| cell(c, wild)).collect::<Vec<_>>();
        let ragged = prop::collection::vec(cell(1, true), 3..=5);
        let row = if wild { prop_oneof![10 => row, 1 => ragged].boxed() } else { row.boxed() };
        prop::collection::vec(row, 0..40).prop_map(|rows| {
            let mut s = String::from("user_id,item,rank,weight\n");
            for r in rows {
                s.push_str(&r.join(","));
                s.push('\n');
            }
            s
        })
    })
}

/// A TOML float, NaN and infinities included.
fn toml_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else {
        format!("{v:?}")
    }
}

/// A key's sensible values, or now and then (1 in 20) any integer or float.
fn or_wild(sensible: BoxedStrategy<String>) -> BoxedStrategy<String> {
    prop_oneof![
        38 => sensible,
        1 => any::<i64>().prop_map(|v| v.to_string()),
        1 => any::<f64>().prop_map(toml_f64),
    ]
    .boxed()
}

fn int(lo: i64, hi: i64) -> BoxedStrategy<String> {
    or_wild((lo..=hi).prop_map(|v| v.to_string()).boxed())
}

fn float(lo: f64, hi: f64) -> BoxedStrategy<String> {
    or_wild((lo..hi).prop_map(toml_f64).boxed())
}

/// A pipeline over data.csv: BoW, PCA and the model, with generated values for their numeric keys.
fn config() -> impl Strategy<Value = String> {
    (
        (int(1, 4), int(0, 8), int(1, 4), int(1, 3)),
        (int(1, 16), int(1, 3), float(0.001, 0.5), float(0.0, 0.01)),
        (prop::collection::vec(int(1, 5), 1..3), float(0.1, 0.5), int(1, 4), any::<bool>()),
        (
            prop_oneof![int(1, 2), float(0.0, 0.3)],
            prop_oneof![int(5, 100), float(0.7, 1.0)],
            prop_oneof![int(1, 3), float(0.5, 0.99)],
        ),
    )
        .prop_map(
            |(
                (dim, hidden, inputs, epochs),
                (batch, patience, lr, wd),
                (k, test, neighbors, weighted),
                (min_df, max_df, comps),
            )| {
                let weight = if weighted { "weight = \"weight\"\n" } else { "" };
                format!(
                    "[job]\nname = \"gen\"\nbackend = \"cpu\"\n\n\
                 [input]\npath = \"data.csv\"\nlayout = \"long\"\nuser = \"user_id\"\norder = \"rank\"\n{weight}\n\
                 [bow]\nmin_df = {min_df}\nmax_df = {max_df}\n\n\
                 [pca]\nn_components = {comps}\n\n\
                 [model]\nembedding_dim = {dim}\nhidden_units = {hidden}\ninputs_per_example = {inputs}\n\n\
                 [train]\nepochs = {epochs}\nbatch_size = {batch}\nlearning_rate = {lr}\nweight_decay = {wd}\n\
                 patience = {patience}\n\n\
                 [eval]\nk = [{}]\ntest_fraction = {test}\nneighbors = {neighbors}\n\n\
                 [output]\ndir = \"out\"\n",
                    k.join(", ")
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_jobs_end_in_a_result_or_an_error_never_a_panic(data in table(), toml in config()) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("data.csv"), &data).expect("data");
        let config = dir.path().join("job.toml");
        std::fs::write(&config, &toml).expect("config");
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            embjob::run(&config, &embjob::Overrides::default(), &embjob::Silent)
        }));
        let out = dir.path().join("out");
        match outcome {
            Err(_) => prop_assert!(false, "panicked on\n{toml}\n{data}"),
            Ok(Err(e)) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert!(std::fs::read_link(out.join("latest")).is_err(), "a failed run left latest: {e}");
                let left = std::fs::read_dir(out.join("runs")).map(|d| d.count()).unwrap_or(0);
                prop_assert_eq!(left, 0, "a failed run left a run folder: {}", e);
            }
            Ok(Ok(summary)) => {
                prop_assert!(summary.run_dir.join("metrics.parquet").exists());
                prop_assert!(out.join("latest").join("run.json").exists());
            }
        }
    }
}
