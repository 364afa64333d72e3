//! `[finetune] objective = "mlm"` in a job, on the tiny random model (which has no prediction head, so a fresh one
//! is drawn) and the 60 short documents of finetune_job.rs: the job trains on the documents not held out, scores
//! the held-out ones' masked tokens before and after, writes the folder as BertForMaskedLM saves it, and encodes
//! with it. Same seed, same model bit for bit. A vocabulary without [MASK] stops the job before anything is written.

use crate::finetune_job::{metric, tiny_job};
use crate::support::*;

#[test]
fn an_mlm_job_trains_scores_held_out_masks_and_writes_a_masked_lm_folder() {
    let job = tiny_job("objective='mlm'\nmlm_probability=0.3");
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no masked-LM head") && r.stderr.contains("fresh"), "{}", r.stderr);
    assert_eq!(metric(&job, "finetune", "held_out_documents"), 12.0);
    assert_eq!(metric(&job, "finetune", "documents_trained"), 48.0);
    assert!(metric(&job, "finetune", "last_loss") < metric(&job, "finetune", "first_loss"), "the loss did not fall");
    let (start, tuned) =
        (metric(&job, "finetune", "held_out_mlm_loss_start"), metric(&job, "finetune", "held_out_mlm_loss_tuned"));
    assert!(tuned < start, "held-out masked-token loss {start} → {tuned}");
    for m in ["held_out_mlm_accuracy_start", "held_out_mlm_accuracy_tuned"] {
        assert!((0.0..=1.0).contains(&metric(&job, "finetune", m)), "{m}");
    }
    assert!(metric(&job, "finetune", "held_out_masked_tokens") > 0.0);
    // Written as BertForMaskedLM saves itself: the encoder under "bert.", the head at the root, no decoder weight
    // (it is the word embeddings).
    let model = job.out().join("latest/finetuned_model");
    let bytes = std::fs::read(model.join("model.safetensors")).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let names = st.names();
    for n in
        ["bert.embeddings.word_embeddings.weight", "cls.predictions.bias", "cls.predictions.transform.dense.weight"]
    {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert!(!names.iter().any(|x| x.starts_with("embeddings.") || x.contains("decoder")), "{names:?}");
    // embjob reads it back (the prefix found), with the trained head: a second run starts where the first ended
    // (the same held-out masks score it as the first run's end).
    let again = tiny_job("objective='mlm'\nmlm_probability=0.3").edit_toml(
        &format!("model='{}'", fixture("tiny_bert").join("bert_gelu").display()),
        &format!("model='{}'", model.display()),
    );
    let r = again.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("no masked-LM head"), "the written head was not found: {}", r.stderr);
    let a = metric(&again, "finetune", "held_out_mlm_loss_start");
    assert!((a - tuned).abs() <= 1e-9 * tuned, "the second run starts at {a}; the first ended at {tuned}");
}

#[test]
fn the_same_seed_gives_the_same_mlm_model_bit_for_bit() {
    let job = tiny_job("objective='mlm'");
    let run = || {
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        std::fs::read(job.out().join("latest/finetuned_model/model.safetensors")).expect("model")
    };
    assert_eq!(run(), run(), "two runs with one seed wrote different weights");
}

#[test]
fn a_vocabulary_without_mask_is_an_input_error_naming_the_tokenizer() {
    let job = tiny_job("objective='mlm'");
    let dir = job.path("model");
    std::fs::create_dir(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_bert/bert_gelu").join(f), dir.join(f)).unwrap();
    }
    let tokenizer = std::fs::read_to_string(fixture("tiny_bert/bert_gelu/tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer.replace("\"[MASK]\"", "\"[MSK]\"")).unwrap();
    job.rewrite_toml(|t| t.replace(&fixture("tiny_bert").join("bert_gelu").display().to_string(), "model"));
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("tokenizer.json") && r.stderr.contains("[MASK]"), "{}", r.stderr);
    job.assert_no_run();
}
