//! Masked-LM fine-tuning equals PyTorch, step by step, and masks as `transformers` does.
//! tests/fixtures/make_mlm_ref.py trained transformers' BertForMaskedLM (a fresh prediction head on the tiny gelu
//! model, the decoder tied to the word embeddings) with torch.optim.AdamW, the linear schedule with warm-up and
//! gradient clipping, dropout off, for 20 steps on fixed masked batches, and saved the starting folder
//! (`finetune_ref/mlm_start`, "bert."-prefixed with its `cls.predictions` head). On every backend, embjob starts
//! from that folder and trains on the same masked batches: the first step's gradients (the tied word embeddings'
//! included) agree with PyTorch's, every step's loss within 1e-4 relative, and afterwards every weight tensor within
//! 1e-3 of its own change.

use std::collections::HashMap;

use embjob::backend::Backend;
use embjob::encoder::{ModelFolder, Tokens, WeightsFile};
use embjob::finetune::{mask_sequence, MaskedBatch, Masking, MlmTrainer, OptimizerParams, NOT_CHOSEN};
use embjob::linalg::rng::SplitMix;
use safetensors::SafeTensors;

use crate::finetune::{f32s, f64s, i64s, l2};
use crate::support::{fixture, on_each_backend};

on_each_backend!(mlm_steps_equal_pytorch,);

struct Reference {
    batches: Vec<MaskedBatch>,
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
    grads: HashMap<String, Vec<f32>>,
    finals: HashMap<String, Vec<f32>>,
    settings: serde_json::Value,
}

fn reference() -> Reference {
    let path = fixture("finetune_ref").join("mlm.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, meta) = SafeTensors::read_metadata(&bytes).expect("metadata");
    let settings = meta.metadata().as_ref().and_then(|m| m.get("settings")).expect("settings").clone();
    let st = SafeTensors::deserialize(&bytes).expect("safetensors");
    let loss = f64s(&st, "loss");
    let batches = (0..loss.len())
        .map(|s| {
            let (ids, shape) = i64s(&st, &format!("ids.{s}"));
            let (types, _) = i64s(&st, &format!("types.{s}"));
            let (mask, _) = i64s(&st, &format!("mask.{s}"));
            let (labels, _) = i64s(&st, &format!("labels.{s}"));
            let seq = shape[1];
            let mut b = MaskedBatch { tokens: Vec::new(), labels: Vec::new() };
            for r in 0..shape[0] {
                let n = mask[r * seq..(r + 1) * seq].iter().filter(|&&m| m == 1).count();
                let at = r * seq..r * seq + n;
                b.tokens.push(Tokens {
                    ids: ids[at.clone()].iter().map(|&i| i as u32).collect(),
                    type_ids: types[at.clone()].iter().map(|&i| i as u32).collect(),
                    truncated: false,
                });
                b.labels.push(labels[at].to_vec());
            }
            b
        })
        .collect();
    let names = st.names();
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

fn mlm_steps_equal_pytorch(be: &dyn Backend) {
    let r = reference();
    let folder = ModelFolder::open(&fixture("finetune_ref").join("mlm_start")).expect("folder");
    let weights = WeightsFile::open(&folder.weights_file()).expect("weights");
    let s = &r.settings;
    let opt = OptimizerParams {
        learning_rate: s["lr"].as_f64().expect("lr"),
        warmup_ratio: s["warmup_ratio"].as_f64().expect("warmup"),
        weight_decay: s["weight_decay"].as_f64().expect("decay"),
        max_grad_norm: s["max_grad_norm"].as_f64().expect("norm"),
        ..OptimizerParams::default()
    };
    let mut t = MlmTrainer::new(be, folder.config, &weights, opt, r.loss.len(), 7).expect("trainer");
    assert!(!t.fresh_head, "the starting folder's head was not found");
    let start: HashMap<String, Vec<f32>> =
        t.net.weights.export(be).expect("export").into_iter().map(|(n, _, v)| (n, v)).collect();
    assert_eq!(start.len(), r.finals.len(), "embjob trains {:?}", start.keys().collect::<Vec<_>>());
    let (loss0, _) = t.loss_and_gradients(&r.batches[0]).expect("gradients");
    assert!((loss0 - r.loss[0]).abs() <= 1e-4 * r.loss[0], "first loss {loss0} vs PyTorch {}", r.loss[0]);
    for (name, g) in t.net.weights.export_grads(be).expect("grads") {
        let want = &r.grads[&name];
        let err = l2(g.iter().zip(want).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        let norm = l2(want.iter().map(|&x| f64::from(x)));
        let floor = 1e-5 * r.grad_norm[0];
        assert!(err <= 1e-4 * norm + floor, "gradient of {name}: error {err:.3e} against a norm of {norm:.3e}");
    }
    for (s, batch) in r.batches.iter().enumerate() {
        let step = t.step(batch).expect("step");
        let rel = (step.loss - r.loss[s]).abs() / r.loss[s];
        assert!(rel <= 1e-4, "step {s} loss {} vs PyTorch {} ({rel:.2e} relative)", step.loss, r.loss[s]);
        let n_rel = (step.update.grad_norm - r.grad_norm[s]).abs() / r.grad_norm[s];
        assert!(n_rel <= 1e-3, "step {s} gradient norm {} vs {}", step.update.grad_norm, r.grad_norm[s]);
    }
    for (name, _, w) in t.net.weights.export(be).expect("export") {
        let (want, w0) = (&r.finals[&name], &start[&name]);
        let change = l2(want.iter().zip(w0).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        let err = l2(w.iter().zip(want).map(|(a, b)| f64::from(*a) - f64::from(*b)));
        if name.ends_with("attention.self.key.bias") {
            // Zero gradient in exact arithmetic (see finetune.rs): Adam's bound instead.
            let moved = w.iter().zip(w0).map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs()).fold(0.0, f64::max);
            assert!(moved <= 1.01 * 20.0 * opt.learning_rate, "{name} moved {moved:.3e}");
            continue;
        }
        assert!(change > 0.0, "PyTorch did not change {name}");
        assert!(
            err <= 1e-3 * change,
            "{name} is {err:.3e} from PyTorch's after 20 steps, which changed it by {change:.3e}"
        );
    }
}

/// The masking rule, measured on 200,000 word pieces: special tokens are never chosen; about 15 % are; of those
/// about 80 % become [MASK], 10 % a random token, 10 % stay; the labels hold the originals; the same seed masks the
/// same way.
#[test]
fn masking_chooses_fifteen_percent_and_replaces_as_bert_does() {
    let m = Masking { probability: 0.15, mask_id: 4, vocab: 1000 };
    let seq = Tokens { ids: (0..200u32).map(|i| 5 + i % 900).collect(), type_ids: vec![0; 200], truncated: false };
    let mut special = vec![false; 200];
    (special[0], special[199]) = (true, true);
    let mut rng = SplitMix::new(3);
    let (mut chosen, mut masked, mut kept, mut pieces) = (0usize, 0usize, 0usize, 0usize);
    for _ in 0..1000 {
        let (out, labels) = mask_sequence(&seq, &special, &m, &mut rng);
        assert_eq!((labels[0], labels[199]), (NOT_CHOSEN, NOT_CHOSEN), "a special token was chosen");
        for (t, &l) in labels.iter().enumerate() {
            if l == NOT_CHOSEN {
                assert_eq!(out.ids[t], seq.ids[t], "an unchosen token changed");
                continue;
            }
            assert_eq!(l, i64::from(seq.ids[t]), "the label is not the original token");
            chosen += 1;
            masked += usize::from(out.ids[t] == 4);
            kept += usize::from(out.ids[t] == seq.ids[t]);
        }
        pieces += 198;
    }
    let share = |a: usize, b: usize| a as f64 / b as f64;
    assert!((share(chosen, pieces) - 0.15).abs() < 0.005, "chosen {}", share(chosen, pieces));
    assert!((share(masked, chosen) - 0.8).abs() < 0.01, "[MASK] {}", share(masked, chosen));
    // A random draw equals the original 1 time in 1000: kept ≈ 10 % + 0.01 %.
    assert!((share(kept, chosen) - 0.1).abs() < 0.01, "kept {}", share(kept, chosen));
    let again = |seed| mask_sequence(&seq, &special, &m, &mut SplitMix::new(seed));
    assert_eq!(again(9), again(9));
    assert_ne!(again(9), again(10));
}
