//! The model stage: split, train (with per-epoch held-out metrics and optional early stopping), evaluate against the
//! popularity baseline, find nearest neighbours, and hand back tables and metrics. Pure: no I/O but the reporter.

use std::time::Instant;

use crate::backend::Backend;
use crate::data::dataset::Interactions;
use crate::error::{Error, Result};
use crate::eval::ranking::{self, RankingMetrics};
use crate::runtime::metrics::Metrics;
use crate::recommend::model::{Batch, HostParams, LossSpec, Network, Shape, TrainOptions};
use crate::plan::ModelPlan;
use crate::runtime::report::Reporter;
use crate::linalg::rng::SplitMix;
use crate::recommend::split::{self, Example, Split};

/// Everything the model stage produces.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    pub shape: Shape,
    pub params: HostParams,
    pub split_summary: SplitSummary,
    /// Train users having each item as a favourite.
    pub popularity: Vec<u64>,
    /// Per item, `neighbors` nearest items by cosine of the input embeddings, and the cosines.
    pub neighbors: Vec<u32>,
    pub neighbor_cosines: Vec<f32>,
    pub neighbors_per_item: usize,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
}

/// Sizes of the split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSummary {
    pub train_examples: usize,
    pub test_users: usize,
    pub test_last: usize,
    pub test_loo: usize,
    pub duplicates_dropped: usize,
    pub users_too_short: usize,
    /// Users with at least 2 but fewer than k + 1 items: their examples have fewer than k inputs.
    pub users_with_fewer_inputs: usize,
}

/// Each user's items without repeats (first occurrence kept), and how many repeats were dropped.
pub fn distinct_lists(data: &Interactions) -> (Vec<Vec<u32>>, usize) {
    let (lists, _, dropped) = distinct_weighted(data);
    (lists, dropped)
}

/// Like [`distinct_lists`], with the weight of each kept entry (1 without a weight column).
fn distinct_weighted(data: &Interactions) -> (Vec<Vec<u32>>, Vec<Vec<f32>>, usize) {
    let mut dropped = 0;
    let mut lists = Vec::with_capacity(data.lists.len());
    let mut weights = Vec::with_capacity(data.lists.len());
    for (u, l) in data.lists.iter().enumerate() {
        let mut seen = std::collections::HashSet::new();
        let (mut items, mut ws) = (Vec::new(), Vec::new());
        for (j, &i) in l.iter().enumerate() {
            if seen.insert(i) {
                items.push(i);
                ws.push(data.weights.as_ref().map_or(1.0, |w| w[u][j]));
            }
        }
        dropped += l.len() - items.len();
        lists.push(items);
        weights.push(ws);
    }
    (lists, weights, dropped)
}

/// The split the plan describes.
pub fn make_split(data: &Interactions, lists: &[Vec<u32>], plan: &ModelPlan) -> Split {
    let keys: Vec<u64> = data
        .users
        .iter()
        .enumerate()
        .map(|(u, label)| split::user_key(label, data.user_numbers.as_ref().map(|n| n[u])))
        .collect();
    split::split(lists, &keys, plan.inputs_per_example, plan.test_fraction, plan.split_seed)
}

/// The pooling weight of an input item of a user.
type WeightOf<'a> = &'a (dyn Fn(u32, u32) -> f32 + Sync);

/// Ranks (and summed loss) of examples, batch by batch, masking `masks[i]` for example i.
fn score(
    net: &mut Network,
    examples: &[Example],
    masks: &[&[u32]],
    batch: usize,
    w: WeightOf,
) -> Result<(f64, Vec<f64>)> {
    let mut loss = 0.0;
    let mut ranks = Vec::with_capacity(examples.len());
    let batch = batch.min(net.eval_rows());
    for (chunk, mchunk) in examples.chunks(batch).zip(masks.chunks(batch)) {
        let b = Batch::weighted(chunk.iter(), w);
        let (l, r) = net.evaluate(&b, mchunk)?;
        loss += l;
        ranks.extend(r.into_iter().map(f64::from));
    }
    Ok((loss, ranks))
}

fn push_ranking(m: &mut Metrics, stage: &str, protocol: &str, r: &RankingMetrics) {
    for &(k, v) in &r.recall {
        m.push(stage, &format!("{protocol}_recall@{k}"), v);
    }
    for &(k, v) in &r.ndcg {
        m.push(stage, &format!("{protocol}_ndcg@{k}"), v);
    }
    m.push(stage, &format!("{protocol}_mrr"), r.mrr);
    m.push(stage, &format!("{protocol}_examples"), r.examples as f64);
}

/// Trains and evaluates the model with embedding width `dim` (resolved by the model stage); records metrics under
/// stages `train`, `eval_model`, `eval_popularity`, `similarity`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    be: &dyn Backend,
    data: &Interactions,
    plan: &ModelPlan,
    dim: usize,
    labels: Option<&[Option<String>]>,
    pairs: Option<&[(String, String, f64)]>,
    metrics: &mut Metrics,
    reporter: &dyn Reporter,
) -> Result<ModelOutput> {
    let (lists, list_weights, duplicates_dropped) = distinct_weighted(data);
    let split = make_split(data, &lists, plan);
    // Weighted pooling: an input's weight is its entry's weight in the user's list.
    let weight_map: Option<std::collections::HashMap<(u32, u32), f32>> = data.weights.as_ref().map(|_| {
        lists
            .iter()
            .zip(&list_weights)
            .enumerate()
            .flat_map(|(u, (l, w))| l.iter().zip(w).map(move |(&i, &x)| ((u as u32, i), x)))
            .collect()
    });
    let weight_fn = |u: u32, i: u32| weight_map.as_ref().and_then(|m| m.get(&(u, i)).copied()).unwrap_or(1.0);
    let weight_of: WeightOf = &weight_fn;
    if split.train.is_empty() {
        return Err(Error::Stage {
            stage: "model",
            message: "no training examples: every user is a test user or has fewer than 2 items".into(),
        });
    }
    let v = data.items.len();
    if v < 2 {
        return Err(Error::Stage { stage: "model", message: format!("needs at least 2 items, the input has {v}") });
    }
    if let Some(&k) = plan.ks.iter().find(|&&k| k > v) {
        return Err(Error::Stage { stage: "model", message: format!("eval.k = {k} is more than the {v} items") });
    }
    let shape = Shape { items: v, dim, hidden: plan.hidden_units, pooling: plan.pooling };
    let test_users = split.test_users.len();
    let mut popularity = vec![0u64; v];
    let mut is_test = vec![false; lists.len()];
    for &u in &split.test_users {
        is_test[u as usize] = true;
    }
    for (u, l) in lists.iter().enumerate() {
        if !is_test[u] {
            for &i in l {
                popularity[i as usize] += 1;
            }
        }
    }
    let last_masks: Vec<&[u32]> = split.test_last.iter().map(|e| &lists[e.user as usize][..]).collect();
    let loo_masks: Vec<&[u32]> = split.test_loo.iter().map(|e| &lists[e.user as usize][..]).collect();

    let params = HostParams::init(shape, plan.init, plan.train_seed);
    let max_inputs = plan.inputs_per_example.max(1);
    let loss = match plan.loss {
        crate::recommend::sampling::Loss::Softmax => LossSpec::Softmax,
        crate::recommend::sampling::Loss::SampledSoftmax => LossSpec::Sampled {
            negatives: plan.negatives,
            proposal: match plan.sampler {
                crate::recommend::sampling::Sampler::Frequency => popularity.iter().map(|&c| c as f64).collect(),
                crate::recommend::sampling::Sampler::Uniform => vec![1.0; v],
            },
            seed: plan.train_seed,
        },
    };
    let mut net = Network::with_loss(be, shape, &params, plan.optimizer, plan.batch_size, max_inputs, &loss)?;
    let opts = TrainOptions {
        batch_size: plan.batch_size,
        learning_rate: plan.learning_rate,
        momentum: plan.momentum,
        weight_decay: plan.weight_decay,
    };
    let steps_per_epoch = split.train.len().div_ceil(plan.batch_size);
    reporter.stage_started("train", Some((steps_per_epoch * plan.epochs) as u64));
    let mut rng = SplitMix::new(plan.train_seed ^ 0x7368_7566_666c_6521);
    let mut order: Vec<usize> = (0..split.train.len()).collect();
    let mut best: Option<(f64, usize, HostParams)> = None;
    let mut since_best = 0;
    let mut epochs_run = 0;
    let mut train_seconds = 0.0;
    let mut done_steps = 0u64;
    for epoch in 1..=plan.epochs {
        // Fisher–Yates with the training seed: a new order each epoch, the same for the same seed.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let t = Instant::now();
        let mut loss_sum = 0.0;
        let mut seen = 0usize;
        // The epoch's steps run on one of rayon's threads, so that each parallel kernel forks from a worker
        // (its own queue) instead of waking the pool from outside and sleeping until it is done.
        rayon::scope(|_| -> Result<()> {
            for chunk in order.chunks(plan.batch_size) {
                crate::runtime::interrupt::check()?;
                let batch = Batch::weighted(chunk.iter().map(|&i| &split.train[i]), weight_of);
                net.train_step(&batch, &opts)?;
                seen += batch.len();
                done_steps += 1;
                if done_steps % crate::recommend::model::LOSS_LOG_STEPS as u64 == 0 || seen == order.len() {
                    loss_sum += net.take_loss()?;
                    let rate = seen as f64 / t.elapsed().as_secs_f64().max(1e-9);
                    reporter.progress(
                        done_steps,
                        &format!(
                            "epoch {epoch}/{}: loss {:.4}, {:.0} examples/s",
                            plan.epochs,
                            loss_sum / seen as f64,
                            rate
                        ),
                    );
                }
            }
            Ok(())
        })?;
        train_seconds += t.elapsed().as_secs_f64();
        epochs_run = epoch;
        let train_loss = loss_sum / seen as f64;
        metrics.push_at("train", "loss", epoch as i64, train_loss);
        let (heldout_loss, loo_ranks) = score(&mut net, &split.test_loo, &loo_masks, plan.batch_size, weight_of)?;
        let heldout_loss = heldout_loss / split.test_loo.len().max(1) as f64;
        metrics.push_at("train", "heldout_loss", epoch as i64, heldout_loss);
        let loo = ranking::ranking_metrics(&loo_ranks, &plan.ks);
        for &(k, r) in &loo.recall {
            metrics.push_at("train", &format!("loo_recall@{k}"), epoch as i64, r);
        }
        metrics.push_at("train", "loo_mrr", epoch as i64, loo.mrr);
        if let Some(patience) = plan.patience {
            let improved = best.as_ref().is_none_or(|(l, _, _)| heldout_loss < *l);
            if improved {
                best = Some((heldout_loss, epoch, net.params()?));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= patience {
                    break;
                }
            }
        }
    }
    let best_epoch = match best {
        Some((_, e, p)) => {
            net.set_params(&p)?;
            e
        }
        None => epochs_run,
    };
    let examples = split.train.len() * epochs_run;
    let examples_per_second = examples as f64 / train_seconds.max(1e-9);
    reporter.stage_finished(
        "train",
        &format!(
            "{epochs_run} epochs × {} examples, {:.0} examples/s{}",
            split.train.len(),
            examples_per_second,
            if plan.patience.is_some() { format!(", best epoch {best_epoch}") } else { String::new() }
        ),
        train_seconds,
    );
    metrics.push("train", "epochs", epochs_run as f64);
    metrics.push("train", "best_epoch", best_epoch as f64);
    metrics.push("train", "examples", split.train.len() as f64);
    metrics.push("train", "seconds", train_seconds);
    metrics.push("train", "examples_per_second", examples_per_second);
    if let Some((_, negatives)) = net.sampling() {
        metrics.push("train", "negatives", negatives as f64);
    }
    metrics.push("train", "embedding_dim", dim as f64);

    // Final evaluation: the model and the popularity baseline, both protocols.
    let (_, last_ranks) = score(&mut net, &split.test_last, &last_masks, plan.batch_size, weight_of)?;
    let (_, loo_ranks) = score(&mut net, &split.test_loo, &loo_masks, plan.batch_size, weight_of)?;
    push_ranking(metrics, "eval_model", "last", &ranking::ranking_metrics(&last_ranks, &plan.ks));
    push_ranking(metrics, "eval_model", "loo", &ranking::ranking_metrics(&loo_ranks, &plan.ks));
    let targets = |ex: &[Example]| ex.iter().map(|e| e.target).collect::<Vec<_>>();
    let pop_last = ranking::popularity_ranks(&popularity, &targets(&split.test_last), &last_masks);
    let pop_loo = ranking::popularity_ranks(&popularity, &targets(&split.test_loo), &loo_masks);
    push_ranking(metrics, "eval_popularity", "last", &ranking::ranking_metrics(&pop_last, &plan.ks));
    push_ranking(metrics, "eval_popularity", "loo", &ranking::ranking_metrics(&pop_loo, &plan.ks));

    // Similarity: cosine neighbours of the input embeddings.
    let k = plan.neighbors.min(v - 1);
    let (neighbors, neighbor_cosines) = be.cosine_top_k(net.embedding_tensor(), v, dim, k)?;
    if let Some(labels) = labels {
        if let Some((agree, chance)) = ranking::label_agreement(&neighbors, k, labels) {
            metrics.push_at("similarity", "label_agreement", k as i64, agree);
            metrics.push_at("similarity", "label_agreement_chance", k as i64, chance);
        }
    }
    let params = net.params()?;
    if let Some(pairs) = pairs {
        let index: std::collections::HashMap<&str, usize> =
            data.items.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
        let (mut human, mut model) = (Vec::new(), Vec::new());
        for (a, b, score) in pairs {
            if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
                human.push(*score);
                model.push(ranking::cosine(&params.emb[i * dim..(i + 1) * dim], &params.emb[j * dim..(j + 1) * dim]));
            }
        }
        metrics.push("similarity", "pairs_used", human.len() as f64);
        metrics.push("similarity", "pairs_unknown_items", (pairs.len() - human.len()) as f64);
        if let Some(rho) = ranking::spearman(&human, &model) {
            metrics.push("similarity", "spearman", rho);
        }
    }
    Ok(ModelOutput {
        shape,
        params,
        split_summary: SplitSummary {
            train_examples: split.train.len(),
            test_users,
            test_last: split.test_last.len(),
            test_loo: split.test_loo.len(),
            duplicates_dropped,
            users_too_short: split.users_too_short,
            users_with_fewer_inputs: lists
                .iter()
                .filter(|l| l.len() >= 2 && l.len() < plan.inputs_per_example + 1)
                .count(),
        },
        popularity,
        neighbors,
        neighbor_cosines,
        neighbors_per_item: k,
        epochs_run,
        best_epoch,
        train_seconds,
        examples_per_second,
    })
}
