//! Every embedding table of a run also as word2vec text (`<name>.vec`) and TensorBoard projector files, holding
//! exactly the vectors of the Parquet tables.

use std::collections::HashMap;

use crate::support::*;

/// Key and vector of one .vec line.
type VecRow = (String, Vec<f32>);

/// A .vec file: header (count, dim) and key → vector.
fn read_vec(path: &std::path::Path) -> ((usize, usize), Vec<VecRow>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<usize> =
        lines.next().expect("header").split_whitespace().map(|x| x.parse().expect("count")).collect();
    let rows = lines
        .map(|l| {
            let mut parts = l.split(' ');
            let key = parts.next().expect("key").to_owned();
            (key, parts.map(|v| v.parse::<f32>().expect("float")).collect())
        })
        .collect();
    ((header[0], header[1]), rows)
}

fn parquet_vectors(df: &polars::prelude::DataFrame) -> Vec<Vec<f32>> {
    let s = df.column("vector").expect("vector").as_materialized_series().clone();
    let arr = s.array().expect("fixed-size list");
    let dim = arr.width();
    let flat: Vec<f32> = arr.get_inner().f32().expect("f32").into_no_null_iter().collect();
    flat.chunks(dim).map(<[f32]>::to_vec).collect()
}

/// A long job with labels and item names with spaces.
fn labelled_job(output: &str) -> Job {
    let data = "user,item\n1,mac and cheese\n1,pear\n2,mac and cheese\n2,plum\n3,pear\n3,plum\n3,mac and cheese\n4,plum\n4,pear\n";
    Job::new().file("data.csv", data).file("labels.csv", "item,kind\nmac and cheese,dish\npear,fruit\nplum,fruit\n").toml(
        &format!(
            "[job]\nname='h'\nbackend='cpu'\n[input]\npath='data.csv'\nlayout='long'\n[pca]\nn_components=2\n[model]\nembedding_dim=2\nhidden_units=0\ninputs_per_example=1\n[train]\nepochs=2\nbatch_size=4\n[eval]\nk=[1]\nneighbors=1\nlabels='labels.csv'\nlabels_category='kind'\n[output]\ndir='out'\n{output}"
        ),
    )
}

#[test]
fn every_embedding_table_is_also_word2vec_text_and_projector_files_with_the_same_vectors() {
    let job = labelled_job("");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = job.out().join("latest");
    // Items: keys made safe, vectors equal to embeddings.parquet bit for bit (f32 printed shortest-exact).
    let emb = job.latest_parquet("embeddings.parquet");
    let items = strs(&emb, "item");
    let want = parquet_vectors(&emb);
    let ((count, dim), rows) = read_vec(&latest.join("items.vec"));
    assert_eq!((count, dim), (3, 2));
    let got: HashMap<String, Vec<f32>> = rows.into_iter().collect();
    for (item, v) in items.iter().zip(&want) {
        assert_eq!(&got[&item.replace(' ', "_")], v, "{item}");
    }
    // The projector: tensors in the same order, metadata with a header and the category column.
    let tensors = std::fs::read_to_string(latest.join("projector/items/tensors.tsv")).expect("tensors");
    let first: Vec<f32> = tensors.lines().next().expect("row").split('\t').map(|v| v.parse().expect("f")).collect();
    assert_eq!(first, want[0]);
    let meta = std::fs::read_to_string(latest.join("projector/items/metadata.tsv")).expect("metadata");
    let lines: Vec<&str> = meta.lines().collect();
    assert_eq!(lines[0], "item\tfrequency\tcategory");
    assert_eq!(lines.len(), 4);
    assert!(lines.contains(&"mac and cheese\t3\tdish"), "{meta}");
    // PCA: each item's loadings on the 2 components, and the users' projections.
    let ((count, dim), _) = read_vec(&latest.join("pca_loadings.vec"));
    assert_eq!((count, dim), (3, 2));
    let proj = job.latest_parquet("pca_projections.parquet");
    let ((count, _), rows) = read_vec(&latest.join("pca_projections.vec"));
    assert_eq!(count, proj.height());
    assert_eq!(rows[0].1, parquet_vectors(&proj)[0]);
    let config = std::fs::read_to_string(latest.join("projector/projector_config.pbtxt")).expect("pbtxt");
    for name in ["items", "pca_loadings", "pca_projections"] {
        assert!(config.contains(&format!("tensor_path: \"{name}/tensors.tsv\"")), "{config}");
    }
    // run.json lists them.
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(latest.join("run.json")).expect("run.json")).expect("json");
    let files: Vec<&str> =
        run["outputs"].as_array().expect("outputs").iter().filter_map(|o| o["file"].as_str()).collect();
    assert!(files.contains(&"items.vec") && files.contains(&"projector/items/tensors.tsv"), "{files:?}");
}

#[test]
fn handoff_false_writes_only_the_parquet_tables() {
    let job = labelled_job("handoff = false\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = job.out().join("latest");
    assert!(latest.join("embeddings.parquet").is_file());
    assert!(!latest.join("items.vec").exists() && !latest.join("projector").exists());
}

#[test]
fn documents_and_token_vectors_are_handed_off_one_embedding_per_hidden_state() {
    let mut job = Job::new().file(
        "docs.csv",
        "id,text\nd1,\"I like orange juice\"\nd2,\"the orange sunset and a red sky\"\nd3,\"money in the bank\"\n",
    );
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        job = job.copy(&fixture("tiny_bert").join("bert_gelu").join(f), &format!("tiny/{f}"));
    }
    let job = job.toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\nid='id'\n[contextual]\nmodel='tiny'\nwords=['orange']\nlayers=[0, 2]\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = job.out().join("latest");
    let docs = job.latest_parquet("text_embeddings.parquet");
    let ((count, _), rows) = read_vec(&latest.join("documents.vec"));
    assert_eq!(count, 3);
    assert_eq!(rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(), ["d1", "d2", "d3"]);
    assert_eq!(rows[1].1, parquet_vectors(&docs)[1]);
    // Two occurrences of "orange" at hidden states 0 and 2, and the static control: one embedding each.
    let tokens = job.latest_parquet("token_embeddings.parquet");
    let all = parquet_vectors(&tokens);
    for (name, layer) in [("tokens_layer0", Some(0)), ("tokens_layer2", Some(2)), ("tokens_static", None)] {
        let ((count, _), rows) = read_vec(&latest.join(format!("{name}.vec")));
        assert_eq!(count, 2, "{name}");
        assert_eq!(rows[0].0, "orange|d1|2", "{name}: key word|row|position");
        let layers: Vec<Option<i64>> =
            tokens.column("layer").expect("layer").as_materialized_series().i64().expect("i64").iter().collect();
        let first = layers.iter().position(|l| *l == layer).expect("row of the layer");
        assert_eq!(rows[0].1, all[first], "{name}");
        let meta = std::fs::read_to_string(latest.join(format!("projector/{name}/metadata.tsv"))).expect("meta");
        assert!(meta.starts_with("word\trow\tposition\norange\td1\t2\n"), "{meta}");
    }
}

/// Above TensorBoard's 100,000 points the projector files hold exactly 100,000 of them and the run says so; the
/// .vec file keeps every vector.
#[test]
fn above_100000_points_the_projector_gets_a_sample_and_the_run_says_so() {
    let n = 100_003;
    let mut csv = String::from("id,a,b,c\n");
    for i in 0..n {
        csv.push_str(&format!("r{i},{},{},{}\n", i % 7, (i * 13) % 11, (i * 5) % 3));
    }
    let job = Job::new().file("num.csv", csv).toml(
        "[job]\nname='n'\nbackend='cpu'\n[input]\npath='num.csv'\nlayout='numeric'\nid='id'\n[pca]\nn_components=2\n[output]\ndir='out'\n",
    );
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("projector/pca_projections: 100000 of 100003 vectors, a stratified sample"),
        "{}",
        r.stderr
    );
    let latest = job.out().join("latest");
    let tensors = std::fs::read_to_string(latest.join("projector/pca_projections/tensors.tsv")).expect("tensors");
    assert_eq!(tensors.lines().count(), 100_000);
    let meta = std::fs::read_to_string(latest.join("projector/pca_projections/metadata.tsv")).expect("metadata");
    assert_eq!(meta.lines().count(), 100_000, "one column: no header");
    let ((count, dim), _) = read_vec(&latest.join("pca_projections.vec"));
    assert_eq!((count, dim), (n, 2));
}
