//! Input data problems: an error naming the file and the column, exit code 3, and `latest` untouched.

use crate::support::*;

/// Runs a good job, replaces data.csv / the config, runs again: must fail with code 3 naming `needles`, with
/// `latest` and the runs untouched.
fn fails_on_data(file: &str, contents: &[u8], extra_input: &str, needles: &[&str]) {
    let (_, r) = rerun_with(file, contents, extra_input, "");
    assert_eq!(r.code, 3, "exit code; stderr: {}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "stderr should mention {n:?}:\n{}", r.stderr);
    }
}

#[test]
fn missing_column_lists_the_columns_there_are() {
    fails_on_data("d.csv", b"person,item\n1,a\n", "", &["d.csv", "column 'user'", "no such column", "person"]);
}

#[test]
fn null_values_are_reported_with_their_row() {
    fails_on_data("d.csv", b"user,item\n1,apple\n2,\n", "", &["d.csv", "column 'item'", "null", "row 2"]);
}

#[test]
fn empty_table() {
    fails_on_data("d.csv", b"user,item\n", "", &["d.csv", "no rows"]);
}

#[test]
fn wrong_dtype_for_the_order_column() {
    fails_on_data(
        "d.csv",
        b"user,item,rank\n1,apple,first\n",
        "order = \"rank\"",
        &["column 'rank'", "expected numbers"],
    );
}

#[test]
fn wrong_dtype_for_the_item_column() {
    fails_on_data("d.csv", b"user,item\n1,1.5\n", "", &["column 'item'", "expected integers or strings"]);
}

#[test]
fn unreadable_parquet_file() {
    fails_on_data("d.parquet", b"this is not parquet", "", &["d.parquet", "not a Parquet file"]);
}

#[test]
fn empty_file() {
    fails_on_data("d.csv", b"", "", &["d.csv"]);
}

#[test]
fn a_vocabulary_that_min_df_empties_is_an_input_error() {
    let job = long_job("[bow]\nmin_df = 4\nmax_df = 100\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no token is left"), "{}", r.stderr);
    assert!(job.latest().is_none());
    assert!(job.runs().is_empty(), "no run folder may remain: {:?}", job.runs());
}

#[test]
fn non_finite_numeric_values_are_rejected() {
    let job = Job::new()
        .file("t.csv", "a,b\n1.0,2.0\ninf,3.0\n")
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='t.csv'\nlayout='numeric'\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("column 'a'") && r.stderr.contains("not finite"), "{}", r.stderr);
    job.assert_no_run();
}

/// Runs the good job once, then `extra` on `file` with `contents`; returns the outcome, having checked that a
/// failure left `latest` and the runs as they were.
fn rerun_with(file: &str, contents: &[u8], extra_input: &str, extra: &str) -> (Job, Outcome) {
    let job = long_job("");
    let r = job.rerun_after(|job| {
        std::fs::write(job.path(file), contents).expect("write data");
        job.rewrite_toml(|toml| {
            let toml = toml
                .replace("data.csv", file)
                .replace("layout = \"long\"", &format!("layout = \"long\"\n{extra_input}"));
            format!("{toml}{extra}")
        });
    });
    (job, r)
}

#[test]
fn ragged_csv_rows_name_the_file() {
    let (_, r) = rerun_with("d.csv", b"user,item\n1,apple\n2,pear,extra,fields\n", "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.csv"), "{}", r.stderr);
}

#[test]
fn an_unclosed_quote_names_the_file() {
    let (_, r) = rerun_with("d.csv", b"user,item\n1,\"apple\n2,pear\n", "", "");
    assert_ne!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.csv"), "{}", r.stderr);
}

#[test]
fn invalid_utf8_names_the_file() {
    let (_, r) = rerun_with("d.csv", b"user,item\n1,caf\xe9\n2,pear\n", "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.csv"), "{}", r.stderr);
}

#[test]
fn a_utf8_bom_and_crlf_line_endings_are_read_normally() {
    let (job, r) = rerun_with("d.csv", b"\xef\xbb\xbfuser,item\r\n1,apple\r\n1,pear\r\n2,apple\r\n", "", "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vocab = job.latest_parquet("vocabulary.parquet");
    assert_eq!(strs(&vocab, "token"), ["apple", "pear"], "no \\r in tokens, no BOM in the header");
}

#[test]
fn non_ascii_items_are_kept() {
    let (job, r) = rerun_with("d.csv", "user,item\n1,crème brûlée\n1,bún chả\n2,crème brûlée\n".as_bytes(), "", "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(strs(&job.latest_parquet("vocabulary.parquet"), "token"), ["bún chả", "crème brûlée"]);
}

#[test]
fn a_single_user_cannot_train_a_model() {
    let (_, r) = rerun_with("d.csv", b"user,item\n1,apple\n1,pear\n1,plum\n", "", "[model]\nembedding_dim = 2\n");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no training examples"), "{}", r.stderr);
}

#[test]
fn duplicate_items_within_a_user_are_dropped_and_counted() {
    let data = b"user,item\n1,apple\n1,apple\n1,pear\n2,apple\n2,plum\n3,pear\n3,plum\n3,apple\n4,plum\n4,pear\n";
    let (job, r) = rerun_with(
        "d.csv",
        data,
        "",
        "[model]\nembedding_dim = 2\nhidden_units = 0\n[eval]\nk = [2]\ntest_fraction = 0.25\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let dropped = (0..m.height()).find(|&i| s[i] == "model" && n[i] == "duplicate_items_dropped").map(|i| v[i]);
    assert_eq!(dropped, Some(1.0));
}

#[test]
fn parquet_with_a_float_item_column_is_a_type_error() {
    let job = Job::new().toml("");
    let path = job.path("d.parquet");
    let mut df = polars::prelude::df!("user" => [1i64, 2], "item" => [1.5f64, 2.5]).expect("df");
    polars::prelude::ParquetWriter::new(std::fs::File::create(&path).expect("create")).finish(&mut df).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    let (_, r) = rerun_with("d.parquet", &bytes, "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("column 'item'") && r.stderr.contains("expected integers or strings"), "{}", r.stderr);
}

#[test]
fn parquet_with_an_all_null_column_is_reported() {
    let job = Job::new().toml("");
    let path = job.path("d.parquet");
    let mut df = polars::prelude::df!("user" => [1i64, 2], "item" => [None::<&str>, None]).expect("df");
    polars::prelude::ParquetWriter::new(std::fs::File::create(&path).expect("create")).finish(&mut df).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    let (_, r) = rerun_with("d.parquet", &bytes, "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("column 'item'") && r.stderr.contains("null"), "{}", r.stderr);
}

#[test]
fn a_list_where_a_flat_column_is_expected_is_a_type_error() {
    let job = Job::new().toml("");
    let path = job.path("d.parquet");
    use polars::prelude::*;
    let items = Series::new("item".into(), [Series::new("".into(), [1i64, 2])]);
    let mut df =
        DataFrame::new_infer_height(vec![Series::new("user".into(), [1i64]).into(), items.into()]).expect("df");
    ParquetWriter::new(std::fs::File::create(&path).expect("create")).finish(&mut df).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    let (_, r) = rerun_with("d.parquet", &bytes, "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("column 'item'"), "{}", r.stderr);
}

#[test]
fn an_output_folder_that_is_a_file_is_a_config_error() {
    let job = long_job("");
    std::fs::write(job.path("outfile"), b"not a folder").expect("write");
    let config = job.config();
    let r = embjob(&["run", config.to_str().expect("utf-8"), "--quiet", "--output", "outfile"], job.dir.path());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("output.dir") && r.stderr.contains("is a file"), "{}", r.stderr);
    assert_eq!(std::fs::read(job.path("outfile")).expect("outfile"), b"not a folder", "the file is untouched");
    job.assert_no_run();
}

#[test]
fn a_read_only_output_folder_fails_without_damage() {
    let job = long_job("");
    assert_eq!(job.run(&[]).code, 0);
    let (latest, runs) = (job.latest(), job.runs());
    let runs_dir = job.out().join("runs");
    let mut perms = std::fs::metadata(&runs_dir).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&runs_dir, perms.clone()).expect("chmod");
    // root ignores permission bits: only meaningful when the folder really is read-only to us.
    let writable = std::fs::write(runs_dir.join(".probe"), b"x").is_ok();
    let _ = std::fs::remove_file(runs_dir.join(".probe"));
    let r = job.run(&[]);
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&runs_dir, perms).expect("chmod back");
    if writable {
        assert_eq!(r.code, 0, "{}", r.stderr);
        return;
    }
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("runs"), "{}", r.stderr);
    assert_eq!(job.latest(), latest);
    assert_eq!(job.runs(), runs);
}

#[test]
fn short_users_are_used_counted_and_reported() {
    // k = 4: users 1 and 2 have 3 items (fewer inputs), user 5 has one item (skipped).
    let data = b"user,item\n1,a1\n1,a2\n1,a3\n2,a1\n2,a3\n2,a4\n3,a1\n3,a2\n3,a3\n3,a4\n3,a5\n4,a2\n4,a3\n4,a4\n4,a5\n4,a1\n5,a1\n";
    let job = Job::new().file("d.csv", &data[..]).toml(
        "[job]\nname='s'\nbackend='cpu'\n[input]\npath='d.csv'\nlayout='long'\n[model]\nembedding_dim=2\nhidden_units=0\n\
         [eval]\nk=[2]\ntest_fraction=0.2\n[output]\ndir='out'\n",
    );
    let config = job.config();
    let r = embjob(&["run", config.to_str().expect("utf-8")], job.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("skipped 1 users with fewer than 2 items"), "{}", r.stderr);
    assert!(r.stderr.contains("2 users have fewer than inputs_per_example + 1"), "{}", r.stderr);
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let get = |k: &str| (0..m.height()).find(|&i| s[i] == "model" && n[i] == k).map(|i| v[i]);
    assert_eq!(get("users_too_short"), Some(1.0));
    assert_eq!(get("users_with_fewer_inputs"), Some(2.0));
}

#[test]
fn a_stage_over_max_memory_is_refused_before_it_runs() {
    let job = Job::new().file("d.csv", "user,item\n1,a\n1,b\n2,a\n2,c\n3,b\n3,c\n").toml(
        "[job]\nname='m'\nbackend='cpu'\nmax_memory='1kB'\n[input]\npath='d.csv'\nlayout='long'\n\
         [model]\nembedding_dim=8\nhidden_units=64\n[eval]\nk=[2]\n[output]\ndir='out'\n",
    );
    let config = job.config();
    let r = embjob(&["run", config.to_str().expect("utf-8")], job.dir.path());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("memory plan, model"), "the plan is stated first: {}", r.stderr);
    assert!(r.stderr.contains("over job.max_memory = 1.0 kB") && r.stderr.contains("largest:"), "{}", r.stderr);
    assert!(job.latest().is_none());
}

#[test]
fn a_parquet_file_with_corrupt_metadata_is_an_input_error_not_a_panic() {
    // Found by the fuzzer (tests/embjob/fuzz.rs): polars-parquet panics on this file's thrift metadata.
    let bytes = std::fs::read(fixture("fuzz_corrupt_thrift.parquet")).expect("fixture");
    let (_, r) = rerun_with("d.parquet", &bytes, "", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.parquet") && r.stderr.contains("corrupt"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "the panic message leaked: {}", r.stderr);
}

/// A numeric-layout job over `bytes` as `d.parquet`, run after a good run, which must stay `latest`.
fn numeric_parquet_rerun(bytes: &[u8]) -> (Job, Outcome) {
    let good = std::fs::read(fixture("fastfood_complete.parquet")).expect("fixture");
    let job = Job::new()
        .file("d.parquet", good)
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='d.parquet'\nlayout='numeric'\nexclude=['restaurant','item','salad']\n[output]\ndir='out'\n");
    let r = job.rerun_after(|job| std::fs::write(job.path("d.parquet"), bytes).expect("write"));
    (job, r)
}

#[test]
fn a_parquet_page_claiming_a_negative_value_count_is_an_input_error_not_an_abort() {
    // Found by the fuzzer: polars-parquet 0.55 allocates 2^61 bytes for this page and aborts the process (exit 134).
    // The page headers are now checked before polars decodes anything.
    let bytes = std::fs::read(fixture("fuzz_parquet_abort.parquet")).expect("fixture");
    let (_, r) = numeric_parquet_rerun(&bytes);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.parquet") && r.stderr.contains("corrupt Parquet file"), "{}", r.stderr);
    assert!(r.stderr.contains("claims -"), "names the negative count: {}", r.stderr);
}

#[test]
fn a_parquet_footer_with_a_length_past_the_file_is_an_input_error() {
    let mut bytes = std::fs::read(fixture("fastfood_complete.parquet")).expect("fixture");
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&(i32::MAX).to_le_bytes());
    let (_, r) = numeric_parquet_rerun(&bytes);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.parquet") && r.stderr.contains("footer claims"), "{}", r.stderr);
}

#[test]
fn a_truncated_parquet_file_is_an_input_error() {
    let bytes = std::fs::read(fixture("fastfood_complete.parquet")).expect("fixture");
    let (_, r) = numeric_parquet_rerun(&bytes[..bytes.len() / 2]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.parquet") && r.stderr.contains("truncated"), "{}", r.stderr);
}

#[test]
fn a_parquet_column_decoding_short_of_the_row_count_is_an_input_error_not_a_panic() {
    // Found by the fuzzer: polars decodes one column of this file 42 values short of its row group (silently in
    // release builds), and the long reader then indexed past the end of it.
    let bytes = std::fs::read(fixture("fuzz_short_column.parquet")).expect("fixture");
    let (_, r) = rerun_with("d.parquet", &bytes, "user = \"user_id\"\norder = \"rank\"\nweight = \"weight\"", "");
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("d.parquet") && r.stderr.contains("corrupt"), "{}", r.stderr);
}

#[test]
fn a_model_larger_than_this_machine_is_refused_before_it_allocates() {
    // No job.max_memory: the limit is the machine's memory. The largest model the config allows (d 4,096, n 65,536,
    // a batch of 2^20: about 0.6 TB of activations) could only abort the process.
    let job = Job::new().file("d.csv", "user,item\n1,a\n1,b\n2,a\n2,c\n3,b\n3,c\n").toml(
        "[job]\nname='m'\nbackend='cpu'\n[input]\npath='d.csv'\nlayout='long'\n\
         [model]\nembedding_dim=4096\nhidden_units=65536\n[train]\nbatch_size=1048576\n[eval]\nk=[2]\n\
         [output]\ndir='out'\n",
    );
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("over this machine's memory") && r.stderr.contains("largest:"), "{}", r.stderr);
    job.assert_no_run();
}
