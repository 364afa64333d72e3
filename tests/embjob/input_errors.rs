//! Input data problems: an error naming the file and the column, exit code 3, and `latest` untouched.

use crate::support::*;

/// Runs a good job, replaces data.csv / the config, runs again: must fail with code 3 naming `needles`.
fn fails_on_data(file: &str, contents: &[u8], extra_input: &str, needles: &[&str]) {
    let job = long_job("");
    let first = job.run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let latest = job.latest().expect("latest");
    let runs = job.runs();

    std::fs::write(job.path(file), contents).expect("write data");
    let toml = std::fs::read_to_string(job.config())
        .expect("read")
        .replace("data.csv", file)
        .replace("layout = \"long\"", &format!("layout = \"long\"\n{extra_input}"));
    std::fs::write(job.config(), toml).expect("write config");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "exit code; stderr: {}", r.stderr);
    for n in needles {
        assert!(r.stderr.contains(n), "stderr should mention {n:?}:\n{}", r.stderr);
    }
    assert_eq!(job.latest(), Some(latest), "latest moved");
    assert_eq!(job.runs(), runs, "runs changed (or a staging folder remains)");
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
    fails_on_data("d.parquet", b"this is not parquet", "", &["d.parquet", "cannot read"]);
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
}
