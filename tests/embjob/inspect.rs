//! `embjob show` and `embjob neighbors`: a finished run read in the terminal.

use crate::support::*;

fn finished_job() -> Job {
    let data = "user,item\n1,mac and cheese\n1,pear\n2,mac and cheese\n2,plum\n3,pear\n3,plum\n3,mac and cheese\n4,plum\n4,pear\n5,fig\n5,pear\n";
    let job = Job::new().file("data.csv", data).toml(
        "[job]\nname='s'\nbackend='cpu'\n[input]\npath='data.csv'\nlayout='long'\n[pca]\nn_components=2\n[model]\nembedding_dim=3\nhidden_units=0\ninputs_per_example=1\n[train]\nepochs=3\nbatch_size=4\n[eval]\nk=[1]\nneighbors=2\n[output]\ndir='out'\n",
    );
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    job
}

#[test]
fn show_prints_the_stages_the_model_against_popularity_and_the_files() {
    let job = finished_job();
    // The output folder (its latest run) and the run folder itself both work.
    for path in [job.out(), job.out().join("latest")] {
        let r = embjob(&["show", path.to_str().expect("utf-8")], job.dir.path());
        assert_eq!(r.code, 0, "{}", r.stderr);
        for want in ["of job 's'", "stages:", "train", "model against popularity", "loo_recall@1", "embeddings.parquet"]
        {
            assert!(r.stdout.contains(want), "{want} missing:\n{}", r.stdout);
        }
    }
    let r = embjob(&["show", job.dir.path().to_str().expect("utf-8")], job.dir.path());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("not a run folder"), "{}", r.stderr);
}

#[test]
fn neighbors_lists_the_nearest_items_as_neighbors_parquet_ranks_them() {
    let job = finished_job();
    let out = job.out();
    let r = embjob(&["neighbors", out.to_str().expect("utf-8"), "mac and cheese", "-k", "2"], job.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{}", r.stdout);
    let nb = job.latest_parquet("neighbors.parquet");
    let (item, rank, neighbor, cos) =
        (strs(&nb, "item"), i64s(&nb, "rank"), strs(&nb, "neighbor"), f64s(&nb, "cosine"));
    for (r_, line) in lines.iter().enumerate() {
        let i = (0..nb.height()).find(|&i| item[i] == "mac and cheese" && rank[i] == r_ as i64 + 1).expect("row");
        assert!(line.ends_with(&neighbor[i]), "{line} vs {}", neighbor[i]);
        let shown: f64 = line.split_whitespace().nth(1).expect("cosine").parse().expect("number");
        assert!((shown - cos[i]).abs() < 1e-4, "{line} vs {}", cos[i]);
    }
    // An unknown item is named with close matches, and the PCA table is searched by row.
    let r = embjob(&["neighbors", out.to_str().expect("utf-8"), "mac"], job.dir.path());
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("no item 'mac'") && r.stderr.contains("mac and cheese"), "{}", r.stderr);
    let r = embjob(&["neighbors", out.to_str().expect("utf-8"), "3", "--table", "pca", "-k", "3"], job.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 4, "{}", r.stdout);
}
