//! Fine-tuning the encoder equals PyTorch, step by step. tests/fixtures/make_finetune_ref.py trained tiny random
//! models with sentence-transformers' MultipleNegativesRankingLoss, torch.optim.AdamW, transformers' linear schedule
//! with warm-up and torch's gradient clipping, dropout off, for 20 steps on fixed batches ("pairs": anchor and
//! positive on the gelu model; "negatives": with a hard negative each, on the gelu_new model with heads of 3). On
//! every backend, embjob trains the same weights on the same batches: the first step's gradients agree with
//! PyTorch's, every step's loss within 1e-4 relative, and afterwards every weight tensor within 1e-3 of its own
//! change (‖w − w_torch‖ ≤ 1e-3 · ‖w_torch − w_start‖). The same run twice gives the same weights bit for bit.
//! (The key bias's gradient is zero in exact arithmetic, so PyTorch and embjob both move it by rounding noise that
//! Adam scales up to the learning rate: it is held to the first-step gradient check with a floor of 1e-5 of the
//! global norm, and after the steps to Adam's bound on how far a value can move.)

use std::collections::HashMap;

use embjob::backend::{Backend, PoolMode};
use embjob::encoder::{ModelFolder, Tokens, WeightsFile};
use embjob::finetune::{ContrastiveParams, ContrastiveTrainer, DropoutRates, OptimizerParams};
use safetensors::SafeTensors;

use crate::support::{fixture, on_each_backend};

on_each_backend!(
    contrastive_steps_equal_pytorch_on_pairs,
    contrastive_steps_equal_pytorch_with_hard_negatives,
    the_same_run_gives_the_same_weights_bit_for_bit,
    dropout_gradients_equal_finite_differences_and_the_cpu_twin,
);

/// A reference run: its batches, losses, norms, first gradients and final weights, and its settings.
struct Reference {
    batches: Vec<Vec<Vec<Tokens>>>,
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
    grads: HashMap<String, Vec<f32>>,
    finals: HashMap<String, Vec<f32>>,
    settings: serde_json::Value,
}

pub(crate) fn f32s(st: &SafeTensors, name: &str) -> Vec<f32> {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
    v.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

pub(crate) fn f64s(st: &SafeTensors, name: &str) -> Vec<f64> {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
    v.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
}

pub(crate) fn i64s(st: &SafeTensors, name: &str) -> (Vec<i64>, Vec<usize>) {
    let v = st.tensor(name).unwrap_or_else(|_| panic!("{name}"));
    let data = v.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    (data, v.shape().to_vec())
}

fn reference(case: &str) -> Reference {
    reference_at(&fixture("finetune_ref").join(format!("{case}.safetensors")))
}

fn reference_at(path: &std::path::Path) -> Reference {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("metadata");
    let settings = meta.metadata().as_ref().and_then(|m| m.get("settings")).expect("settings").clone();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let names = st.names();
    let loss = f64s(&st, "loss");
    let mut batches = Vec::new();
    for s in 0..loss.len() {
        let mut parts = Vec::new();
        for p in 0.. {
            if !names.iter().any(|n| **n == format!("ids.{s}.{p}")) {
                break;
            }
            let (ids, shape) = i64s(&st, &format!("ids.{s}.{p}"));
            let (types, _) = i64s(&st, &format!("types.{s}.{p}"));
            let (mask, _) = i64s(&st, &format!("mask.{s}.{p}"));
            let seq = shape[1];
            let texts = (0..shape[0])
                .map(|b| {
                    let n = mask[b * seq..(b + 1) * seq].iter().filter(|&&m| m == 1).count();
                    Tokens {
                        ids: ids[b * seq..b * seq + n].iter().map(|&i| i as u32).collect(),
                        type_ids: types[b * seq..b * seq + n].iter().map(|&i| i as u32).collect(),
                        truncated: false,
                    }
                })
                .collect();
            parts.push(texts);
        }
        batches.push(parts);
    }
    let named = |prefix: &str| -> HashMap<String, Vec<f32>> {
        names.iter().filter_map(|n| n.strip_prefix(prefix).map(|k| (k.to_owned(), f32s(&st, n)))).collect()
    };
    Reference {
        grad_norm: f64s(&st, "grad_norm"),
        grads: named("grad."),
        finals: named("final."),
        batches,
        loss,
        settings: serde_json::from_str(&settings).expect("settings json"),
    }
}

fn trainer<'b>(be: &'b dyn Backend, model: &str, r: &Reference) -> ContrastiveTrainer<'b> {
    trainer_at(be, &fixture("tiny_bert").join(model), r)
}

fn trainer_at<'b>(be: &'b dyn Backend, model: &std::path::Path, r: &Reference) -> ContrastiveTrainer<'b> {
    let folder = ModelFolder::open(model).expect("folder");
    let weights = WeightsFile::open(&folder.weights_file()).expect("weights");
    let s = &r.settings;
    let opt = OptimizerParams {
        learning_rate: s["lr"].as_f64().expect("lr"),
        warmup_ratio: s["warmup_ratio"].as_f64().expect("warmup"),
        weight_decay: s["weight_decay"].as_f64().expect("decay"),
        max_grad_norm: s["max_grad_norm"].as_f64().expect("norm"),
        ..OptimizerParams::default()
    };
    let loss = ContrastiveParams { scale: s["scale"].as_f64().expect("scale") };
    let sequences = r.batches[0].iter().map(Vec::len).sum();
    ContrastiveTrainer::new(be, folder.config, &weights, opt, loss, PoolMode::Mean, sequences, r.loss.len())
        .expect("trainer")
}

pub(crate) fn l2(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// Trains on the reference's batches and compares every step.
fn equals_pytorch(be: &dyn Backend, case: &str, model: &str) {
    equals_reference(be, case, &reference(case), &fixture("tiny_bert").join(model));
}

fn equals_reference(be: &dyn Backend, case: &str, r: &Reference, model: &std::path::Path) {
    let mut t = trainer_at(be, model, r);
    let start: HashMap<String, Vec<f32>> =
        t.net.weights.export(be).expect("export").into_iter().map(|(n, _, v)| (n, v)).collect();
    // The first step's gradients, before any update.
    let (anchors, cands) = split(&r.batches[0]);
    let (loss0, _) = t.loss_and_gradients(&anchors, &cands).expect("gradients");
    assert!((loss0 - r.loss[0]).abs() <= 1e-4 * r.loss[0].abs(), "{case}: first loss {loss0} vs PyTorch {}", r.loss[0]);
    for (name, g) in t.net.weights.export_grads(be).expect("grads") {
        let want = &r.grads[&name];
        let err = l2(g.iter().zip(want).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        let norm = l2(want.iter().map(|&x| f64::from(x)));
        // A gradient that is zero in exact arithmetic (the key bias: softmax does not see a constant added to every
        // score) is rounding noise in both: measured against the global norm.
        let floor = 1e-5 * r.grad_norm[0];
        assert!(
            err <= 1e-4 * norm + floor,
            "{case}: gradient of {name}: error {err:.3e} against a norm of {norm:.3e} (floor {floor:.1e})"
        );
    }
    for (s, batch) in r.batches.iter().enumerate() {
        let (anchors, cands) = split(batch);
        let step = t.step(&anchors, &cands).expect("step");
        let rel = (step.loss - r.loss[s]).abs() / r.loss[s].abs();
        assert!(rel <= 1e-4, "{case}: step {s} loss {} vs PyTorch {} ({rel:.2e} relative)", step.loss, r.loss[s]);
        let n_rel = (step.update.grad_norm - r.grad_norm[s]).abs() / r.grad_norm[s];
        assert!(n_rel <= 1e-3, "{case}: step {s} gradient norm {} vs {}", step.update.grad_norm, r.grad_norm[s]);
    }
    for (name, _, w) in t.net.weights.export(be).expect("export") {
        let (want, w0) = (&r.finals[&name], &start[&name]);
        let change = l2(want.iter().zip(w0).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        let err = l2(w.iter().zip(want).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        assert!(change > 0.0, "{case}: PyTorch did not change {name}");
        if name.ends_with("attention.self.key.bias") {
            // Zero gradient in exact arithmetic: Adam turns both sides' rounding noise into steps of up to the
            // learning rate, in unrelated directions. Held to that bound instead: no value moved further than the
            // sum of the schedule's rates (and decay, which biases do not get).
            let bound: f64 = (0..r.loss.len()).map(|s| t_rate(r, s)).sum::<f64>() * 1.01;
            let moved = w.iter().zip(w0).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).fold(0.0, f64::max);
            assert!(moved <= bound, "{case}: {name} moved {moved:.3e}, more than Adam's bound {bound:.3e}");
            continue;
        }
        assert!(
            err <= 1e-3 * change,
            "{case}: {name} is {err:.3e} from PyTorch's after 20 steps, which changed it by {change:.3e}"
        );
    }
}

/// The learning rate of step `s` of the reference's schedule.
fn t_rate(r: &Reference, s: usize) -> f64 {
    let opt = OptimizerParams {
        learning_rate: r.settings["lr"].as_f64().expect("lr"),
        warmup_ratio: r.settings["warmup_ratio"].as_f64().expect("warmup"),
        ..OptimizerParams::default()
    };
    opt.rate_at(s, r.loss.len())
}

/// The genuine all-MiniLM-L6-v2 (EMBJOB_MODEL_DIR) for a few steps against the PyTorch reference `.ci/run` writes
/// with tests/fixtures/make_finetune_ref.py (EMBJOB_FINETUNE_MINILM_REF): on the CPU, as CI runs it. Without the
/// reference the test passes unless EMBJOB_REQUIRE_MODEL is set (CI sets it).
#[test]
fn genuine_minilm_steps_equal_pytorch_on_the_cpu() {
    let (Some(reference), Some(model)) =
        (std::env::var_os("EMBJOB_FINETUNE_MINILM_REF"), std::env::var_os("EMBJOB_MODEL_DIR"))
    else {
        assert!(
            std::env::var_os("EMBJOB_REQUIRE_MODEL").is_none(),
            "EMBJOB_REQUIRE_MODEL is set, but EMBJOB_FINETUNE_MINILM_REF or EMBJOB_MODEL_DIR is not"
        );
        return;
    };
    let r = reference_at(std::path::Path::new(&reference));
    equals_reference(&embjob::backend::Cpu::new(), "minilm", &r, std::path::Path::new(&model));
}

fn split(batch: &[Vec<Tokens>]) -> (Vec<Tokens>, Vec<Tokens>) {
    (batch[0].clone(), batch[1..].iter().flatten().cloned().collect())
}

fn contrastive_steps_equal_pytorch_on_pairs(be: &dyn Backend) {
    equals_pytorch(be, "pairs", "bert_gelu");
}

fn contrastive_steps_equal_pytorch_with_hard_negatives(be: &dyn Backend) {
    equals_pytorch(be, "negatives", "bert_gelu_new_odd_heads");
}

fn the_same_run_gives_the_same_weights_bit_for_bit(be: &dyn Backend) {
    let r = reference("pairs");
    let run = || {
        let mut t = trainer(be, "bert_gelu", &r);
        for batch in r.batches.iter().take(5) {
            let (a, c) = split(batch);
            t.step(&a, &c).expect("step");
        }
        t.net.weights.export(be).expect("export")
    };
    let (a, b) = (run(), run());
    for ((name, _, x), (_, _, y)) in a.iter().zip(&b) {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{name} differs between two runs with the same seed and batches");
    }
}

/// Dropout in training (BERT's places: after the embeddings' LayerNorm, on the attention probabilities, after the
/// attention output's and the feed-forward output's dense layers). With a step's masks fixed, the whole network's
/// gradient is the derivative of its loss (central finite differences along random directions of every weight);
/// every backend draws the CPU twin's masks (the same loss and gradients); and the masks change with the step.
fn dropout_gradients_equal_finite_differences_and_the_cpu_twin(be: &dyn Backend) {
    let r = reference("pairs");
    let (a, c) = split(&r.batches[0]);
    let rates = DropoutRates { hidden: 0.2, attention: 0.2 };
    let mut t = trainer(be, "bert_gelu", &r);
    let (plain, _) = t.loss_and_gradients(&a, &c).expect("gradients");
    t.net.set_dropout(rates, 11);
    let (loss, _) = t.loss_and_gradients(&a, &c).expect("gradients");
    assert!((loss - plain).abs() > 1e-4, "dropout changed nothing: {loss} vs {plain}");
    let grads: Vec<(String, Vec<f32>)> = t.net.weights.export_grads(be).expect("grads");
    // The CPU twin: the same masks, so the same loss and gradients.
    let cpu = embjob::backend::Cpu::new();
    let mut twin = trainer(&cpu, "bert_gelu", &r);
    twin.net.set_dropout(rates, 11);
    let (twin_loss, _) = twin.loss_and_gradients(&a, &c).expect("twin");
    assert!((loss - twin_loss).abs() <= 1e-5 * twin_loss.abs(), "loss {loss} vs the CPU twin's {twin_loss}");
    let global = l2(grads.iter().flat_map(|(_, g)| g.iter().map(|&x| f64::from(x))));
    for ((name, g), (_, w)) in grads.iter().zip(twin.net.weights.export_grads(&cpu).expect("twin grads")) {
        let err = l2(g.iter().zip(&w).map(|(x, y)| f64::from(*x) - f64::from(*y)));
        let norm = l2(w.iter().map(|&x| f64::from(x)));
        assert!(err <= 1e-4 * norm + 1e-6 * global, "{name}: {err:.3e} from the CPU twin's (norm {norm:.3e})");
    }
    // Finite differences along two random directions over every weight, the masks of step 0 held.
    let start: Vec<f32> = t.net.weights.export(be).expect("export").into_iter().flat_map(|(_, _, v)| v).collect();
    let flat: Vec<f32> = grads.iter().flat_map(|(_, g)| g.iter().copied()).collect();
    let loss_at = |w: &[f32]| -> f64 {
        let mut f = trainer(be, "bert_gelu", &r);
        f.net.set_dropout(rates, 11);
        let mut at = 0;
        for p in f.net.weights.all() {
            be.write(&p.value, &w[at..at + p.len()]).expect("write");
            at += p.len();
        }
        f.loss_and_gradients(&a, &c).expect("loss").0
    };
    for seed in [7u64, 8] {
        let mut rng = embjob::linalg::rng::SplitMix::new(seed);
        let dir: Vec<f32> = (0..start.len()).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect();
        let analytic: f64 = flat.iter().zip(&dir).map(|(g, d)| f64::from(*g) * f64::from(*d)).sum();
        // Central differences at two steps, Richardson-extrapolated (their eps² terms cancel: the loss's
        // curvature along a direction of every weight is large enough to move a single step's estimate by 3 %).
        let central = |eps: f32| {
            let moved = |sign: f32| -> Vec<f32> { start.iter().zip(&dir).map(|(x, d)| x + sign * eps * d).collect() };
            (loss_at(&moved(1.0)) - loss_at(&moved(-1.0))) / (2.0 * f64::from(eps))
        };
        let fd = (4.0 * central(1e-3) - central(2e-3)) / 3.0;
        assert!(
            (fd - analytic).abs() <= 2e-2 * fd.abs().max(analytic.abs()) + 1e-3,
            "with dropout: directional derivative {analytic:.6} vs finite differences {fd:.6}"
        );
    }
    // Another step draws other masks.
    t.step(&a, &c).expect("step");
    let (after, _) = t.loss_and_gradients(&a, &c).expect("gradients");
    let mut again = trainer(be, "bert_gelu", &r);
    again.net.set_dropout(rates, 11);
    again.step(&a, &c).expect("step");
    assert_eq!(after.to_bits(), again.loss_and_gradients(&a, &c).expect("gradients").0.to_bits(), "same seed");
}
