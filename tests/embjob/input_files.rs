//! `input.path` as a folder (Hive-partitioned as Spark and DuckDB write them) or a glob of files: the files are read
//! in path order and stacked, so a job over the pieces equals the job over the whole file.

use crate::support::*;

/// The food favourites split into three consecutive pieces under `dir` (one per `part=<i>` folder with `hive`).
fn food_pieces(job: Job, dir: &str, hive: bool) -> Job {
    let text = std::fs::read_to_string(repo().join("pipelines/data/food_favorites.csv")).expect("food");
    let mut lines = text.lines();
    let header = lines.next().expect("header").to_owned();
    let rows: Vec<&str> = lines.collect();
    let mut job = job;
    for (i, chunk) in rows.chunks(rows.len().div_ceil(3)).enumerate() {
        let name = if hive { format!("{dir}/part={i}/data.csv") } else { format!("{dir}/piece-{i}.csv") };
        job = job.file(&name, format!("{header}\n{}\n", chunk.join("\n")));
    }
    // Spark's marker files are skipped.
    job.file(&format!("{dir}/_SUCCESS"), "")
}

fn food_toml(path: &str) -> String {
    format!(
        "[job]\nname='f'\nbackend='cpu'\n[input]\npath='{path}'\nformat='csv'\nlayout='long'\nuser='user_id'\nitem='item'\norder='rank'\n[pca]\nn_components=4\n[model]\nembedding_dim=3\nhidden_units=8\n[train]\nepochs=2\n[output]\ndir='out'\nhandoff=false\nplots=false\n"
    )
}

#[test]
fn a_folder_or_glob_of_pieces_gives_the_same_results_as_the_whole_file() {
    let whole =
        Job::new().copy(&repo().join("pipelines/data/food_favorites.csv"), "food.csv").toml(&food_toml("food.csv"));
    assert_eq!(whole.run(&[]).code, 0);
    let folder = food_pieces(Job::new(), "pieces", true).toml(&food_toml("pieces"));
    let r = folder.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("from 3 files"), "{}", r.stderr);
    let glob = food_pieces(Job::new(), "pieces", false).toml(&food_toml("pieces/piece-*.csv"));
    assert_eq!(glob.run(&[]).code, 0);
    let want = result_metrics(&whole);
    assert_eq!(
        result_metrics(&folder).iter().filter(|m| m.0 != "ingest").collect::<Vec<_>>(),
        want.iter().filter(|m| m.0 != "ingest").collect::<Vec<_>>()
    );
    assert_eq!(
        result_metrics(&glob).iter().filter(|m| m.0 != "ingest").collect::<Vec<_>>(),
        want.iter().filter(|m| m.0 != "ingest").collect::<Vec<_>>()
    );
    for f in ["embeddings.parquet", "pca_components.parquet", "vocabulary.parquet"] {
        assert!(whole.latest_parquet(f).equals_missing(&folder.latest_parquet(f)), "{f}");
    }
    // run.json fingerprints every file.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.out().join("latest/run.json")).expect("run.json")).expect("json");
    let inputs = run["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 3);
    assert!(inputs[1]["path"].as_str().expect("path").ends_with("part=1/data.csv"));
    assert_eq!(inputs[0]["sha256"].as_str().expect("sha").len(), 64);
}

#[test]
fn hive_partition_folders_supply_a_column_the_files_do_not_hold() {
    // One folder per user (user_id=<u>), the files holding only item and rank.
    let job = Job::new()
        .file("fav/user_id=1/f.csv", "item,rank\napple,1\npear,2\n")
        .file("fav/user_id=2/f.csv", "item,rank\npear,1\nplum,2\n")
        .file("fav/user_id=3/f.csv", "item,rank\napple,1\nplum,2\n")
        .toml("[job]\nname='h'\nbackend='cpu'\n[input]\npath='fav'\nlayout='long'\nuser='user_id'\nitem='item'\norder='rank'\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let bow = job.latest_parquet("bow.parquet");
    assert_eq!(strs(&bow, "row"), ["1", "1", "2", "2", "3", "3"]);
}

#[test]
fn a_bad_piece_is_named_with_its_own_row_and_an_empty_folder_before_any_work() {
    let job = Job::new()
        .file("d/a.csv", "user,item\n1,apple\n2,pear\n")
        .file("d/b.csv", "user,item\n3,plum\n4,\n")
        .toml("[job]\nname='b'\nbackend='cpu'\n[input]\npath='d'\nlayout='long'\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("b.csv") && r.stderr.contains("'item'") && r.stderr.contains("data row 2 of this file"),
        "{}",
        r.stderr
    );
    job.assert_no_run();
    // A column of another type than the first file's.
    let job = Job::new()
        .file("d/a.csv", "user,item\n1,apple\n")
        .file("d/b.csv", "user,item\nx,pear\n")
        .toml("[job]\nname='b'\nbackend='cpu'\n[input]\npath='d'\nlayout='long'\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("b.csv") && r.stderr.contains("does not match") && r.stderr.contains("a.csv"),
        "{}",
        r.stderr
    );
    // No data files, or two formats: config errors naming input.path.
    let job = Job::new()
        .file("empty/_SUCCESS", "")
        .toml("[job]\nname='e'\n[input]\npath='empty'\nlayout='long'\nformat='csv'\n[output]\ndir='out'\n");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("input.path") && r.stderr.contains("no data files"), "{}", r.stderr);
    let job = Job::new()
        .file("m/a.csv", "user,item\n1,apple\n")
        .copy(&repo().join("pipelines/data/movielens_favorites.parquet"), "m/b.parquet")
        .toml("[job]\nname='m'\n[input]\npath='m'\nlayout='long'\n[output]\ndir='out'\n");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("b.parquet") && r.stderr.contains("one format per input"), "{}", r.stderr);
}
