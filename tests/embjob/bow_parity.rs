//! The bag-of-words of the Lee corpus equals scikit-learn's CountVectorizer token for token and count for count
//! (reference files written by shared/peers/ref_pca.py, copied to tests/fixtures).

use crate::support::*;

fn check_lee(min_df: u32) {
    let job = Job::new().copy(&fixture("lee_docs.parquet"), "lee.parquet").toml(&format!(
        r#"
[job]
name = "lee"
backend = "cpu"
[input]
path = "lee.parquet"
layout = "text"
text = "text"
id = "doc_id"
[bow]
min_df = {min_df}
[output]
dir = "out"
"#
    ));
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let vocab = job.latest_parquet("vocabulary.parquet");
    let want = read_parquet(&fixture(&format!("vocab_lee_mindf{min_df}.parquet")));
    assert_eq!(strs(&vocab, "token"), strs(&want, "term"), "vocabulary (sorted terms)");
    assert_eq!(i64s(&vocab, "token_id"), i64s(&want, "term_index"));
    assert_eq!(i64s(&vocab, "df"), i64s(&want, "df"));
    assert_eq!(i64s(&vocab, "count"), i64s(&want, "total_count"));

    let bow = job.latest_parquet("bow.parquet");
    let want = read_parquet(&fixture(&format!("bow_lee_mindf{min_df}.parquet")));
    let mut got: Vec<(i64, i64, i64)> = strs(&bow, "row")
        .iter()
        .map(|r| r.parse::<i64>().expect("doc_id"))
        .zip(i64s(&bow, "token_id"))
        .zip(f64s(&bow, "value"))
        .map(|((d, t), v)| (d, t, v as i64))
        .collect();
    let mut expected: Vec<(i64, i64, i64)> = i64s(&want, "doc_id")
        .into_iter()
        .zip(i64s(&want, "term_index"))
        .zip(i64s(&want, "count"))
        .map(|((d, t), c)| (d, t, c))
        .collect();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got.len(), expected.len(), "non-zeros");
    assert_eq!(got, expected);
}

#[test]
fn lee_min_df_1_equals_scikit_learn() {
    check_lee(1);
}

#[test]
fn lee_min_df_2_equals_scikit_learn() {
    check_lee(2);
}

#[test]
fn tfidf_rows_have_unit_length_and_smooth_idf() {
    // Three documents; "a b" style tokens need two characters, so use words.
    let job = Job::new()
        .file("docs.csv", "id,text\n1,apple pear\n2,apple apple plum\n3,pear\n")
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\nid='id'\n[bow]\nweighting='tfidf'\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bow = job.latest_parquet("bow.parquet");
    let rows = i64s(&bow, "row_id");
    let tokens = i64s(&bow, "token_id");
    let values = f64s(&bow, "value");
    for r in 0..3 {
        let norm: f64 = rows.iter().zip(&values).filter(|(&x, _)| x == r).map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-12, "row {r} norm² {norm}");
    }
    // Document 2: apple (tf 2, df 2), plum (tf 1, df 1); idf = ln((1+n)/(1+df)) + 1 with n = 3.
    let idf = |df: f64| (4.0 / (1.0 + df)).ln() + 1.0;
    let (a, p) = (2.0 * idf(2.0), idf(1.0));
    let norm = (a * a + p * p).sqrt();
    let value = |row: i64, tok: i64| {
        rows.iter().zip(&tokens).zip(&values).find(|((&r, &t), _)| r == row && t == tok).map(|(_, &v)| v)
    };
    // Vocabulary order: apple 0, pear 1, plum 2.
    assert!((value(1, 0).expect("apple") - a / norm).abs() < 1e-12);
    assert!((value(1, 2).expect("plum") - p / norm).abs() < 1e-12);
}

#[test]
fn max_features_keeps_the_most_frequent_and_breaks_ties_by_vocabulary_order() {
    // Counts: apple 3, pear 2, plum 2, fig 1 -> max_features 2 keeps apple and pear (pear before plum).
    let job = Job::new()
        .file("docs.csv", "text\napple pear plum\napple pear fig\napple plum\n")
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\n[bow]\nmax_features=2\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vocab = job.latest_parquet("vocabulary.parquet");
    assert_eq!(strs(&vocab, "token"), ["apple", "pear"]);
    assert_eq!(i64s(&vocab, "count"), [3, 2]);
}

#[test]
fn stop_words_and_document_frequency_bounds() {
    // df: apple 3/3, pear 2/3, plum 1/3, the 3/3 (stop word).
    let job = Job::new()
        .file("docs.csv", "text\nthe apple pear\nthe apple pear\nthe apple plum\n")
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\n[bow]\nstop_words=['the']\nmin_df=2\nmax_df=0.9\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let vocab = job.latest_parquet("vocabulary.parquet");
    assert_eq!(strs(&vocab, "token"), ["pear"]);
}
