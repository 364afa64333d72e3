//! The document evaluation of a text job: every document vector (bag-of-words rows, PCA projections, contextual
//! vectors) gets its cosine neighbours in `doc_neighbors.parquet`, and with `eval.labels` keyed by row id, label
//! agreement and leave-one-out kNN accuracy against chance and the majority class in metrics.parquet.

use std::collections::HashMap;

use crate::support::*;

/// Eight short documents in two topics (fruit, money), and their labels by id.
const DOCS: [(&str, &str, &str); 8] = [
    ("f1", "I like orange juice and apple juice", "fruit"),
    ("f2", "apple banana orange fruit juice", "fruit"),
    ("f3", "a ripe banana and a sweet apple", "fruit"),
    ("f4", "fresh orange and banana fruit salad", "fruit"),
    ("m1", "money in the bank account", "money"),
    ("m2", "the bank lends money at interest", "money"),
    ("m3", "interest on the savings account", "money"),
    ("m4", "cash and money from the bank", "money"),
];

/// The text job over DOCS with BoW, PCA and the tiny contextual model, evaluated with `eval` (TOML lines).
fn job(eval: &str, labels: &str) -> Job {
    let mut csv = String::from("id,text\n");
    for (id, text, _) in DOCS {
        csv.push_str(&format!("{id},\"{text}\"\n"));
    }
    let mut job = Job::new().file("docs.csv", csv).file("labels.csv", labels);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        job = job.copy(&fixture("tiny_bert").join("bert_gelu").join(f), &format!("tiny/{f}"));
    }
    job.toml(&format!(
        "[job]\nname='d'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\nid='id'\n[bow]\nweighting='tfidf'\n[pca]\nn_components=3\n[contextual]\nmodel='tiny'\n[eval]\n{eval}\n[output]\ndir='out'\n"
    ))
}

fn all_labels() -> String {
    let mut s = String::from("doc,topic\n");
    for (id, _, topic) in DOCS {
        s.push_str(&format!("{id},{topic}\n"));
    }
    s
}

fn metric(job: &Job, name: &str) -> Option<f64> {
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    (0..m.height()).find(|&i| s[i] == "eval_documents" && n[i] == name).map(|i| v[i])
}

/// Rows of a fixed-size-list column.
fn vectors(job: &Job, file: &str) -> Vec<Vec<f64>> {
    let df = job.latest_parquet(file);
    let s = df.column("vector").expect("vector").as_materialized_series().clone();
    let arr = s.array().expect("fixed-size list");
    let dim = arr.width();
    let flat: Vec<f64> = arr.get_inner().f32().expect("f32").into_no_null_iter().map(f64::from).collect();
    flat.chunks(dim).map(<[f64]>::to_vec).collect()
}

/// The BoW rows as dense vectors, from bow.parquet.
fn bow_rows(job: &Job, n: usize) -> Vec<Vec<f64>> {
    let df = job.latest_parquet("bow.parquet");
    let (rows, tokens, values) = (i64s(&df, "row_id"), i64s(&df, "token_id"), f64s(&df, "value"));
    let width = tokens.iter().copied().max().unwrap_or(0) as usize + 1;
    let mut out = vec![vec![0.0; width]; n];
    for i in 0..rows.len() {
        out[rows[i] as usize][tokens[i] as usize] = values[i];
    }
    out
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

#[test]
fn every_document_vector_is_scored_by_its_neighbours_labels_against_chance() {
    let job = job("neighbors = 3\nlabels = 'labels.csv'\nlabels_row = 'doc'\nlabels_category = 'topic'", &all_labels());
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("kept for the document evaluation"), "memory plan: {}", r.stderr);
    assert!(r.stderr.contains("8 labelled documents in 2 categories"), "{}", r.stderr);
    let n = DOCS.len();
    let topic: Vec<&str> = DOCS.iter().map(|d| d.2).collect();
    // Chance: 2 × 4·3 / (8·7); majority 4/8.
    assert!((metric(&job, "chance/label_agreement").expect("chance") - 24.0 / 56.0).abs() < 1e-12);
    assert_eq!(metric(&job, "majority/knn_accuracy"), Some(0.5));
    assert_eq!(metric(&job, "labelled_documents"), Some(8.0));

    let nb = job.latest_parquet("doc_neighbors.parquet");
    let (method, row, rank, nrow, cos) = (
        strs(&nb, "method"),
        i64s(&nb, "row_id"),
        i64s(&nb, "rank"),
        i64s(&nb, "neighbor_row_id"),
        f64s(&nb, "cosine"),
    );
    let spaces = [
        ("bow", bow_rows(&job, n)),
        ("pca", vectors(&job, "pca_projections.parquet")),
        ("contextual", vectors(&job, "text_embeddings.parquet")),
    ];
    for (name, x) in &spaces {
        // The neighbours are the brute-force cosine top 3 (within f32 rounding of the cosine).
        let mut lists: HashMap<usize, Vec<(usize, f64)>> = HashMap::new();
        for i in (0..nb.height()).filter(|&i| method[i] == *name) {
            lists.entry(row[i] as usize).or_default().push((nrow[i] as usize, cos[i]));
            assert!(rank[i] >= 1 && rank[i] <= 3);
        }
        assert_eq!(lists.len(), n, "{name}: every document has neighbours");
        let (mut agree, mut right) = (0.0, 0usize);
        for (d, list) in &lists {
            assert_eq!(list.len(), 3, "{name} doc {d}");
            let mut want: Vec<(usize, f64)> = (0..n).filter(|j| j != d).map(|j| (j, cosine(&x[*d], &x[j]))).collect();
            want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            for (r, &(j, c)) in list.iter().enumerate() {
                assert!((c - cosine(&x[*d], &x[j])).abs() < 1e-5, "{name} doc {d}: cosine of {j}");
                assert!(
                    c >= want[2].1 - 1e-5,
                    "{name} doc {d}: rank {r} is {j} at {c}, the third best is {}",
                    want[2].1
                );
            }
            let same = list.iter().filter(|(j, _)| topic[*j] == topic[*d]).count();
            agree += same as f64 / 3.0;
            right += usize::from(same >= 2);
        }
        // The metrics are those of the written neighbour lists.
        let got = metric(&job, &format!("{name}/label_agreement@3")).expect("agreement");
        assert!((got - agree / n as f64).abs() < 1e-12, "{name}: {got} vs {}", agree / n as f64);
        let got = metric(&job, &format!("{name}/knn_accuracy@3")).expect("knn");
        assert!((got - right as f64 / n as f64).abs() < 1e-12, "{name}: {got}");
    }
    // Word overlap makes the two topics plain to tf-idf.
    assert!(metric(&job, "bow/label_agreement@3").expect("bow") > 0.7);
}

#[test]
fn documents_without_a_label_are_left_out_of_the_scores_but_keep_their_neighbours() {
    let labels: String = all_labels().lines().filter(|l| !l.starts_with("m4")).map(|l| format!("{l}\n")).collect();
    let job = job("neighbors = 2\nlabels = 'labels.csv'\nlabels_row = 'doc'\nlabels_category = 'topic'", &labels);
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(metric(&job, "labelled_documents"), Some(7.0));
    // 4·3 + 3·2 same-topic pairs over 7·6; majority 4/7.
    assert!((metric(&job, "chance/label_agreement").expect("chance") - 18.0 / 42.0).abs() < 1e-12);
    assert!((metric(&job, "majority/knn_accuracy").expect("majority") - 4.0 / 7.0).abs() < 1e-12);
    let nb = job.latest_parquet("doc_neighbors.parquet");
    assert_eq!(nb.height(), 3 * 8 * 2, "three methods × eight documents × two neighbours");
}

#[test]
fn without_labels_a_text_job_writes_neighbours_only() {
    let job = job("neighbors = 2", "");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(job.latest_parquet("doc_neighbors.parquet").height(), 3 * 8 * 2);
    assert!(metric(&job, "bow/label_agreement@2").is_none());
    assert!(metric(&job, "bow/mean_neighbor_cosine").is_some());
}

#[test]
fn document_label_mistakes_are_named_before_or_without_a_run() {
    // Labels keyed by a column that holds no document id: the file and the column, no run.
    let job = job("labels = 'labels.csv'\nlabels_row = 'topic'\nlabels_category = 'topic'", &all_labels());
    let r = job.run(&[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("labels.csv") && r.stderr.contains("'topic'"), "{}", r.stderr);
    job.assert_no_run();
    // Item keys in a text job, pairs without a model: config errors with their keys.
    let job = job_with("labels = 'labels.csv'\nlabels_item = 'doc'\npairs = 'labels.csv'");
    let r = job.validate();
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("eval.labels_item") && r.stderr.contains("eval.pairs"), "{}", r.stderr);
    // labels_row in an item job.
    let r = long_job("[model]\nembedding_dim = 2\n[eval]\nlabels_row = 'doc'\n").validate();
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("eval.labels_row"), "{}", r.stderr);
}

fn job_with(eval: &str) -> Job {
    job(eval, &all_labels())
}
