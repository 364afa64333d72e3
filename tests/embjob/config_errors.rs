//! Config problems: each is an error that names the key path (and the line and column for TOML syntax), exits with
//! code 2, and leaves `latest` and every earlier run as they were.

use crate::support::*;

const GOOD: &str = "[job]\nname = \"t\"\nbackend = \"cpu\"\n\n[input]\npath = \"data.csv\"\nlayout = \"long\"\n\n[output]\ndir = \"out\"\n";

/// Runs the good config once, swaps in `bad`, runs again and checks the failure and that nothing moved.
fn fails(bad: &str, code: i32, needles: &[&str]) {
    let job = long_job("");
    let r = job.rerun_after(|job| std::fs::write(job.config(), bad).expect("write bad config"));
    assert_eq!(r.code, code, "exit code; stderr: {}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "stderr should mention {n:?}:\n{}", r.stderr);
    }

    // `validate` reports the same problem with the same code.
    let v = job.validate();
    assert_eq!(v.code, code, "validate exit code; stderr: {}", v.stderr);
}

fn with(section_and_key: &str) -> String {
    format!("{GOOD}{section_and_key}\n")
}

#[test]
fn toml_syntax_error_names_line_and_column() {
    fails("[job]\nname = \"t\"\nseed = = 3\n", 2, &["job.toml:3:8", "extra `=`"]);
}

#[test]
fn unknown_top_level_section() {
    fails(&with("[bogus]\nx = 1"), 2, &["unknown field `bogus`"]);
}

#[test]
fn unknown_key_names_its_section() {
    fails(&with("[bow]\nmin_dff = 2"), 2, &["bow", "unknown field `min_dff`"]);
}

#[test]
fn wrong_type_names_the_key_path() {
    fails(&GOOD.replace("name = \"t\"", "name = \"t\"\nseed = \"seven\""), 2, &["job.seed", "invalid type"]);
}

#[test]
fn negative_count_is_rejected() {
    fails(&with("[bow]\nmin_df = -1"), 2, &["bow.min_df", "negative"]);
}

#[test]
fn negative_keep_runs_is_rejected() {
    fails(&GOOD.replace("dir = \"out\"", "dir = \"out\"\nkeep_runs = -2"), 2, &["output.keep_runs"]);
}

#[test]
fn zero_keep_runs_is_rejected() {
    fails(&GOOD.replace("dir = \"out\"", "dir = \"out\"\nkeep_runs = 0"), 2, &["output.keep_runs", "at least 1"]);
}

#[test]
fn min_df_above_max_df() {
    fails(&with("[bow]\nmin_df = 5\nmax_df = 2"), 2, &["bow.min_df", "above max_df"]);
}

#[test]
fn fraction_out_of_range() {
    fails(&with("[bow]\nmax_df = 1.5"), 2, &["bow.max_df", "[0, 1]"]);
}

#[test]
fn missing_input_file() {
    fails(&GOOD.replace("data.csv", "nope.csv"), 2, &["input.path", "file not found", "nope.csv"]);
}

#[test]
fn bad_token_pattern() {
    fails(&with("[bow]\ntoken_pattern = \"(unclosed\""), 2, &["bow.token_pattern", "regular expression"]);
}

#[test]
fn unknown_layout() {
    fails(&GOOD.replace("layout = \"long\"", "layout = \"wide\""), 2, &["input.layout", "unknown variant `wide`"]);
}

#[test]
fn key_that_does_not_apply_to_the_layout() {
    fails(
        &GOOD.replace("layout = \"long\"", "layout = \"long\"\ntext = \"body\""),
        2,
        &["input.text", "not used with layout"],
    );
}

#[test]
fn missing_required_key() {
    fails("[job]\nname = \"t\"\n", 2, &["missing field `input`"]);
}

#[test]
fn format_cannot_be_inferred() {
    let job = long_job("").file("data.bin", "x");
    std::fs::write(job.config(), GOOD.replace("data.csv", "data.bin")).expect("write");
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("input.format"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn every_problem_is_listed_at_once() {
    let job = long_job("");
    std::fs::write(
        job.config(),
        with("[bow]\nmin_df = 5\nmax_df = 2\nmax_features = 0").replace("data.csv", "nope.csv"),
    )
    .expect("write");
    let r = job.validate();
    assert_eq!(r.code, 2);
    for key in ["input.path", "bow.min_df", "bow.max_features"] {
        assert!(r.stderr.contains(key), "{key} missing from:\n{}", r.stderr);
    }
    job.assert_no_run();
}

#[test]
fn unreadable_config_file() {
    let job = long_job("");
    let r = embjob(&["run", "does-not-exist.toml"], job.dir.path());
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does-not-exist.toml"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn bad_command_line_is_a_usage_error() {
    let job = long_job("");
    let r = embjob(&["run", "job.toml", "--backend", "tpu"], job.dir.path());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("tpu"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn validate_accepts_a_good_config_and_writes_nothing() {
    let job = long_job("");
    let r = job.validate();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("ok"));
    assert!(!job.out().exists(), "validate must not create outputs");
}

#[test]
fn the_shipped_pipelines_validate() {
    for p in ["pipelines/food.toml", "pipelines/movielens.toml"] {
        let r = embjob(&["validate", p], &repo());
        assert_eq!(r.code, 0, "{p}: {}", r.stderr);
    }
}

#[test]
fn zero_components() {
    fails(&with("[pca]\nn_components = 0"), 2, &["pca.n_components", "at least 1"]);
}

#[test]
fn variance_fraction_of_one_or_more() {
    fails(&with("[pca]\nn_components = 1.0"), 2, &["pca.n_components", "strictly between 0 and 1"]);
}

#[test]
fn randomized_options_need_the_randomized_solver() {
    fails(&with("[pca]\nn_components = 2\noversamples = 5"), 2, &["pca.oversamples", "randomized"]);
}

#[test]
fn a_variance_target_needs_an_exact_solver() {
    fails(&with("[pca]\nn_components = 0.5\nsolver = \"randomized\""), 2, &["pca.n_components", "integer"]);
    fails(&with("[pca]\nn_components = 0.5\nsolver = \"lanczos\""), 2, &["pca.n_components", "lanczos"]);
}

#[test]
fn more_components_than_the_data_allows_is_an_input_error() {
    // 3 users × 3 items: at most 3 components.
    let job = long_job("[pca]\nn_components = 5\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("pca.n_components = 5"), "{}", r.stderr);
    assert!(job.latest().is_none());
}

const MODEL: &str = "[model]\nembedding_dim = 2\nhidden_units = 4\n";

#[test]
fn zero_embedding_dim() {
    fails(&with("[model]\nembedding_dim = 0"), 2, &["model.embedding_dim", "at least 1"]);
}

#[test]
fn embedding_dim_neither_integer_nor_auto() {
    fails(&with("[model]\nembedding_dim = \"wide\""), 2, &["model.embedding_dim", "auto"]);
}

#[test]
fn zero_batch_size() {
    fails(&with(&format!("{MODEL}[train]\nbatch_size = 0")), 2, &["train.batch_size"]);
}

#[test]
fn learning_rate_must_be_positive() {
    fails(&with(&format!("{MODEL}[train]\nlearning_rate = 0.0")), 2, &["train.learning_rate", "positive"]);
    fails(&with(&format!("{MODEL}[train]\nlearning_rate = -0.1")), 2, &["train.learning_rate"]);
    fails(&with(&format!("{MODEL}[train]\nlearning_rate = nan")), 2, &["train.learning_rate"]);
}

#[test]
fn momentum_needs_sgd() {
    fails(&with(&format!("{MODEL}[train]\nmomentum = 0.9")), 2, &["train.momentum", "sgd"]);
}

#[test]
fn train_without_model() {
    fails(&with("[train]\nepochs = 2"), 2, &["train", "needs a [model]"]);
}

#[test]
fn unknown_pooling() {
    fails(&with("[model]\npooling = \"max\""), 2, &["model.pooling", "unknown variant `max`"]);
}

#[test]
fn test_fraction_out_of_range() {
    fails(&with(&format!("{MODEL}[eval]\ntest_fraction = 1.0")), 2, &["eval.test_fraction"]);
}

#[test]
fn missing_labels_file() {
    fails(&with(&format!("{MODEL}[eval]\nlabels = \"nope.csv\"")), 2, &["eval.labels", "file not found"]);
}

#[test]
fn model_needs_users_and_items() {
    let job = Job::new()
        .file("docs.csv", "text\nhello world\n")
        .toml(&format!("[job]\nname='t'\n[input]\npath='docs.csv'\nlayout='text'\n{MODEL}"));
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("model") && r.stderr.contains("layout"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn k_larger_than_the_item_count_is_an_input_error() {
    // The small data set has 3 items.
    let job = long_job(&format!("{MODEL}[eval]\nk = [10]\n"));
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("eval.k = 10"), "{}", r.stderr);
    assert!(job.latest().is_none());
}

#[test]
fn a_weight_column_needs_the_long_layout() {
    let job = Job::new()
        .file("docs.csv", "text\nhello world\n")
        .toml("[job]\nname='t'\n[input]\npath='docs.csv'\nlayout='text'\nweight='w'\n");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("input.weight") && r.stderr.contains("not used with layout"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn max_memory_must_be_a_size() {
    fails(
        &GOOD.replace("backend = \"cpu\"", "backend = \"cpu\"\nmax_memory = \"lots\""),
        2,
        &["job.max_memory", "not a size"],
    );
    fails(&GOOD.replace("backend = \"cpu\"", "backend = \"cpu\"\nmax_memory = -5"), 2, &["job.max_memory"]);
}
