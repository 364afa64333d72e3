//! `[finetune]` in a job, on a tiny random model (tests/fixtures/tiny_bert/bert_gelu) and 60 short documents in
//! three categories: the job trains, writes the model folder into the run, encodes with it, and scores it next to
//! the starting model, on all documents and on the held-out ones. Same seed, same model bit for bit. Bad pairs, a
//! folder without a tokenizer and unimplemented choices stop the job before anything is written; a run killed while
//! it trains leaves nothing.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::*;

const WORDS: [&[&str]; 3] = [
    &["orange", "apple", "banana", "juice", "fruit", "tree", "leaf", "green", "yellow"],
    &["sunset", "sky", "sun", "moon", "red", "blue", "colour"],
    &["bank", "river", "money", "water"],
];

/// 60 documents (ids d0..d59) of words of one category each, and their labels.
pub(crate) fn corpus() -> (String, String) {
    let mut r = embjob::linalg::rng::SplitMix::new(5);
    let (mut docs, mut labels) = ("id,text\n".to_owned(), "id,category\n".to_owned());
    for i in 0..60 {
        let words = WORDS[i % 3];
        let n = 3 + r.below(5);
        let text: Vec<&str> = (0..n).map(|_| words[r.below(words.len())]).collect();
        docs.push_str(&format!("d{i},{}\n", text.join(" ")));
        labels.push_str(&format!("d{i},{}\n", ["fruit", "sky", "bank"][i % 3]));
    }
    (docs, labels)
}

pub(crate) fn tiny_job(extra: &str) -> Job {
    let (docs, labels) = corpus();
    let model = fixture("tiny_bert").join("bert_gelu");
    Job::new().file("docs.csv", docs).file("labels.csv", labels).toml(&format!(
        "[job]\nname='ft'\nseed=3\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\ntext='text'\nid='id'\n\
         [finetune]\nmodel='{}'\nbatch_size=4\nepochs=3\nlearning_rate=1e-3\n{extra}\n[contextual]\nmodel='finetuned'\n\
         [eval]\nlabels='labels.csv'\nneighbors=5\n[output]\ndir='out'\n",
        model.display()
    ))
}

pub(crate) fn metric(job: &Job, stage: &str, name: &str) -> f64 {
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (m.column("stage").unwrap(), m.column("metric").unwrap(), m.column("value").unwrap());
    let (s, n, v) = (s.str().unwrap(), n.str().unwrap(), v.f64().unwrap());
    (0..m.height())
        .find(|&i| s.get(i) == Some(stage) && n.get(i) == Some(name))
        .and_then(|i| v.get(i))
        .unwrap_or_else(|| panic!("no metric {stage}/{name}"))
}

#[test]
fn a_job_fine_tunes_encodes_with_the_result_and_scores_both() {
    let job = tiny_job("");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let model = job.out().join("latest/finetuned_model");
    for f in ["model.safetensors", "config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"] {
        assert!(model.join(f).is_file(), "finetuned_model/{f} missing");
    }
    let steps = metric(&job, "finetune", "steps");
    let losses = job.latest_parquet("finetune_loss.parquet");
    assert_eq!(losses.height() as f64, steps);
    assert!(metric(&job, "finetune", "last_loss") < metric(&job, "finetune", "first_loss"), "the loss did not fall");
    // 20 % of 60 labelled documents held out, and every method scored on them apart.
    assert_eq!(metric(&job, "finetune", "held_out_documents"), 12.0);
    for m in ["bow", "contextual_start", "contextual"] {
        let all = metric(&job, "eval_documents", &format!("{m}/knn_accuracy@5"));
        let held = metric(&job, "eval_documents", &format!("held_out/{m}/knn_accuracy@5"));
        assert!((0.0..=1.0).contains(&all) && (0.0..=1.0).contains(&held), "{m}: {all} {held}");
    }
    // The vectors written are the fine-tuned model's: embjob's own encoder on the written folder gives them.
    use embjob::encoder::{Encoder, ModelFolder, Precision, TextTokenizer, WeightsFile};
    let folder = ModelFolder::open(&model).expect("the written folder opens");
    let weights = WeightsFile::open(&folder.weights_file()).expect("weights");
    let be = embjob::backend::Cpu::new();
    let mut enc = Encoder::new(&be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
    let tok = TextTokenizer::open(&folder.tokenizer_file(), 24).expect("tokenizer");
    let emb = job.latest_parquet("text_embeddings.parquet");
    let (docs, _) = corpus();
    let first = docs.lines().nth(1).and_then(|l| l.split_once(',')).map(|(_, t)| t.to_owned()).expect("doc");
    let v = enc.embed(&[tok.encode(&first).expect("tokens")], embjob::backend::PoolMode::Mean, false).expect("embed");
    let col = emb.column("vector").unwrap().array().unwrap().get_as_series(0).unwrap();
    let written: Vec<f32> = col.f32().unwrap().into_no_null_iter().collect();
    for (a, b) in v.iter().zip(&written) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "text_embeddings does not hold the fine-tuned vectors");
    }
    // Dropout as the model's config.json says (0.1 and 0.1), recorded with the folder.
    let record = std::fs::read_to_string(model.join("embjob_finetune.json")).expect("embjob_finetune.json");
    let record: serde_json::Value = serde_json::from_str(&record).expect("json");
    assert_eq!(record["dropout"], serde_json::json!({ "hidden": 0.1f32, "attention": 0.1f32 }), "{record}");
    // Training changed the weights.
    let start = std::fs::read(fixture("tiny_bert/bert_gelu/model.safetensors")).expect("start");
    assert_ne!(std::fs::read(model.join("model.safetensors")).expect("tuned"), start);
}

#[test]
fn the_same_seed_gives_the_same_model_bit_for_bit() {
    let job = tiny_job("");
    let run = || {
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::read(job.out().join("latest/finetuned_model/model.safetensors")).expect("model")
    };
    let first = run();
    assert_eq!(first, run(), "two runs with one seed wrote different weights");
    // The model's dropout (0.1) is on by default: without it the same run trains other weights.
    let off = tiny_job("dropout=0");
    assert_eq!(off.run(&[]).code, 0);
    let plain = std::fs::read(off.out().join("latest/finetuned_model/model.safetensors")).expect("model");
    assert_ne!(first, plain, "dropout = 0 trained the same weights as the default");
}

#[test]
fn pairs_from_a_file_by_text_and_by_row_id() {
    for pairs in [
        "anchor,positive\norange juice,apple banana\nred sky,blue moon\nriver bank,money water\nsun moon,sky\n",
        "anchor_id,positive_id,negative_id\nd0,d3,d1\nd1,d4,d2\nd2,d5,d0\nd6,d9,d7\n",
    ] {
        let job = tiny_job("pairs='pairs.csv'").file("pairs.csv", pairs);
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{pairs}: {}", r.stderr);
        assert_eq!(metric(&job, "finetune", "pairs"), 4.0);
        assert_eq!(metric(&job, "finetune", "held_out_documents"), 0.0);
    }
}

#[test]
fn bad_pairs_stop_the_job_naming_file_column_and_row() {
    for (pairs, column, says) in [
        ("anchor_id,positive_id\nd0,d3\nd1,nope\n", "positive_id", "data row 2: 'nope' is not a row id"),
        ("anchor,positive\norange juice,apple\nred sky,\n", "positive", "data row 2"),
        ("anchor,positive\norange,apple\n\"  \",sky\n", "anchor", "data row 2: empty"),
        ("first,second\na,b\n", "", "expected columns anchor, positive"),
    ] {
        let job = tiny_job("pairs='pairs.csv'").file("pairs.csv", pairs);
        let r = job.run(&[]);
        assert_eq!(r.code, 3, "{pairs}: {}", r.stderr);
        assert!(r.stderr.contains("pairs.csv") && r.stderr.contains(column) && r.stderr.contains(says), "{}", r.stderr);
        job.assert_no_run();
    }
}

#[test]
fn unusable_settings_are_config_errors_with_their_key() {
    for (extra, key) in [
        ("objective='mlm'\npairs='pairs.csv'", "finetune.pairs"),
        ("objective='mlm'\nmlm_probability=1.5", "finetune.mlm_probability"),
        ("mlm_probability=0.2", "finetune.mlm_probability"),
        ("objective='mask'", "finetune.objective"),
        ("dropout=1.0", "finetune.dropout"),
        ("scale=0.0", "finetune.scale"),
        ("holdout=1.0", "finetune.holdout"),
        ("warmup_ratio=1.5", "finetune.warmup_ratio"),
    ] {
        let job = tiny_job(extra);
        let r = job.run(&[]);
        assert_eq!(r.code, 2, "{extra}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{extra}: {}", r.stderr);
        job.assert_no_run();
    }
    let job = tiny_job("").edit_toml("[eval]\nlabels='labels.csv'\n", "[eval]\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("finetune.pairs"), "{}", r.stderr);
    // contextual.model = "finetuned" without a [finetune] section.
    let (docs, labels) = corpus();
    let job = Job::new().file("docs.csv", docs).file("labels.csv", labels).toml(
        "[job]\nname='ft'\n[input]\npath='docs.csv'\nlayout='text'\ntext='text'\nid='id'\n[contextual]\nmodel='finetuned'\n",
    );
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.model"), "{}", r.stderr);
}

#[test]
fn the_memory_plan_states_the_activations_kept_and_max_memory_refuses_before_training() {
    for objective in ["contrastive", "mlm"] {
        let job = tiny_job(&format!("objective='{objective}'"))
            .edit_toml("backend='cpu'", "backend='cpu'\nmax_memory='64kB'");
        let r = job.run(&[]);
        assert_eq!(r.code, 3, "{objective}: {}", r.stderr);
        let refusal =
            r.stderr.lines().find(|l| l.contains("finetune: needs about")).unwrap_or_else(|| panic!("{}", r.stderr));
        let largest = "largest: activations kept for the backward pass";
        assert!(refusal.contains(largest) && refusal.contains("padded rows"), "{refusal}");
        assert!(r.stderr.contains("over job.max_memory = 64.0 kB"), "{objective}: {}", r.stderr);
        assert!(!r.stderr.contains("contextual"), "refused before the starting model encodes: {}", r.stderr);
        job.assert_no_run();
    }
}

#[test]
fn a_folder_without_a_tokenizer_is_an_input_error() {
    let job = tiny_job("");
    let dir = job.path("model");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_bert/bert_gelu").join(f), dir.join(f)).unwrap();
    }
    job.rewrite_toml(|t| {
        let start = fixture("tiny_bert").join("bert_gelu").display().to_string();
        t.replace(&start, "model")
    });
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("tokenizer.json"), "{}", r.stderr);
    job.assert_no_run();
}

#[test]
fn a_run_killed_while_it_trains_leaves_nothing() {
    let job = tiny_job("").edit_toml("epochs=3", "epochs=2000");
    let mut child = Command::new(env!("CARGO_BIN_EXE_embjob"))
        .args(["run", job.config().to_str().expect("utf-8")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Killed once training has started (the memory plan's notice comes right before the first step).
    let stderr = child.stderr.take().expect("stderr");
    for line in BufReader::new(stderr).lines() {
        if line.expect("line").contains("memory plan, finetune") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().expect("kill");
    child.wait().expect("wait");
    job.assert_no_run();
    let job = job.edit_toml("epochs=2000", "epochs=2");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "rerun: {}", r.stderr);
    assert!(job.out().join("latest/finetuned_model/model.safetensors").is_file());
}
