//! The recommender's work in three parts: [`split_data`] (the peer's split and the checks), [`train`] (epochs with
//! per-epoch held-out metrics and optional early stopping) and [`evaluate`] (against the popularity baseline,
//! nearest neighbours, similarity with people's judgements). Pure: no I/O but the reporter.

use std::collections::HashMap;
use std::time::Instant;

use crate::backend::Backend;
use crate::data::dataset::Interactions;
use crate::error::{Error, Result};
use crate::eval::ranking::{self, RankingMetrics};
use crate::linalg::rng::SplitMix;
use crate::recommend::network::{Batch, HostParams, LossSpec, Network, Shape, TrainOptions};
use crate::recommend::network::{EmbeddingInit, Optimizer, Pooling};
use crate::recommend::sampling::{Loss, Sampler};
use crate::recommend::split::{self, Example, Split};
use crate::runtime::metrics::Metrics;
use crate::runtime::progress::Reporter;

/// The model, its training and its evaluation, as the plan resolved them (`[model]`, `[train]`, `[eval]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelParams {
    pub loss: Loss,
    /// Negatives per batch (sampled softmax).
    pub negatives: usize,
    pub sampler: Sampler,
    /// The embedding width; `None`: `auto`, from the item count ([`ModelParams::embedding_dim_for`]).
    pub embedding_dim: Option<usize>,
    pub hidden_units: usize,
    pub pooling: Pooling,
    pub inputs_per_example: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub init: EmbeddingInit,
    pub train_seed: u64,
    pub patience: Option<usize>,
    /// Ranking cut-offs.
    pub ks: Vec<usize>,
    /// Neighbours per item.
    pub neighbors: usize,
    pub test_fraction: f64,
    pub split_seed: u64,
}

impl ModelParams {
    /// The embedding width d for `items` items: as configured, or for `auto` round(items^0.25) (at least 1).
    pub fn embedding_dim_for(&self, items: usize) -> usize {
        self.embedding_dim.unwrap_or_else(|| ((items as f64).powf(0.25).round() as usize).max(1))
    }
}

/// Two items and people's similarity score for them (`eval.pairs`).
pub type PairScore = (String, String, f64);

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

/// The split the parameters describe.
pub fn make_split(data: &Interactions, lists: &[Vec<u32>], plan: &ModelParams) -> Split {
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

/// The data split for training and evaluation: each user's distinct items, the examples, each (user, item)'s
/// pooling weight, and the training users' item counts (the popularity baseline and the frequency sampler).
pub struct Prepared<'d> {
    data: &'d Interactions,
    lists: Vec<Vec<u32>>,
    split: Split,
    weights: Option<HashMap<(u32, u32), f32>>,
    popularity: Vec<u64>,
    duplicates_dropped: usize,
}

impl Prepared<'_> {
    /// The pooling weight of item `i` in user `u`'s list (1 without a weight column).
    fn weight(&self, u: u32, i: u32) -> f32 {
        self.weights.as_ref().and_then(|m| m.get(&(u, i)).copied()).unwrap_or(1.0)
    }

    /// Each example's mask for ranking: its user's whole list.
    fn masks(&self, examples: &[Example]) -> Vec<&[u32]> {
        examples.iter().map(|e| &self.lists[e.user as usize][..]).collect()
    }

    /// Sizes of the split.
    pub fn summary(&self, params: &ModelParams) -> SplitSummary {
        let split = &self.split;
        SplitSummary {
            train_examples: split.train.len(),
            test_users: split.test_users.len(),
            test_last: split.test_last.len(),
            test_loo: split.test_loo.len(),
            duplicates_dropped: self.duplicates_dropped,
            users_too_short: split.users_too_short,
            users_with_fewer_inputs: self
                .lists
                .iter()
                .filter(|l| l.len() >= 2 && l.len() < params.inputs_per_example + 1)
                .count(),
        }
    }
}

/// Splits the users into training and test examples (the peer's protocol) and checks that the model can train and
/// be ranked on them.
pub fn split_data<'d>(data: &'d Interactions, params: &ModelParams) -> Result<Prepared<'d>> {
    let (lists, list_weights, duplicates_dropped) = distinct_weighted(data);
    let split = make_split(data, &lists, params);
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
    if let Some(&k) = params.ks.iter().find(|&&k| k > v) {
        return Err(Error::Stage { stage: "model", message: format!("eval.k = {k} is more than the {v} items") });
    }
    // Weighted pooling: an input's weight is its entry's weight in the user's list.
    let weights = data.weights.as_ref().map(|_| {
        lists
            .iter()
            .zip(&list_weights)
            .enumerate()
            .flat_map(|(u, (l, w))| l.iter().zip(w).map(move |(&i, &x)| ((u as u32, i), x)))
            .collect()
    });
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
    Ok(Prepared { data, lists, split, weights, popularity, duplicates_dropped })
}

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

/// A trained network and how its training went.
pub struct Trained<'b> {
    pub net: Network<'b>,
    pub shape: Shape,
    pub epochs_run: usize,
    pub best_epoch: usize,
    pub train_seconds: f64,
    pub examples_per_second: f64,
}

/// Trains the network with embedding width `dim`: epochs in a seeded order, held-out loss and LOO recall after each
/// (stage `train`), early stopping with `patience` (the best epoch's parameters are kept).
pub fn train<'b>(
    be: &'b dyn Backend,
    prep: &Prepared<'_>,
    params: &ModelParams,
    dim: usize,
    metrics: &mut Metrics,
    reporter: &dyn Reporter,
) -> Result<Trained<'b>> {
    let v = prep.data.items.len();
    let shape = Shape { items: v, dim, hidden: params.hidden_units, pooling: params.pooling };
    let host = HostParams::init(shape, params.init, params.train_seed);
    let loss = match params.loss {
        Loss::Softmax => LossSpec::Softmax,
        Loss::SampledSoftmax => LossSpec::Sampled {
            negatives: params.negatives,
            proposal: match params.sampler {
                Sampler::Frequency => prep.popularity.iter().map(|&c| c as f64).collect(),
                Sampler::Uniform => vec![1.0; v],
            },
            seed: params.train_seed,
        },
    };
    let max_inputs = params.inputs_per_example.max(1);
    let mut net = Network::with_loss(be, shape, &host, params.optimizer, params.batch_size, max_inputs, &loss)?;
    let train = &prep.split.train;
    reporter.stage_started("train", Some((train.len().div_ceil(params.batch_size) * params.epochs) as u64));
    let mut rng = SplitMix::new(params.train_seed ^ 0x7368_7566_666c_6521);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best: Option<(f64, usize, HostParams)> = None;
    let (mut since_best, mut epochs_run, mut train_seconds, mut done_steps) = (0, 0, 0.0, 0u64);
    let loo_masks = prep.masks(&prep.split.test_loo);
    for epoch in 1..=params.epochs {
        // Fisher–Yates with the training seed: a new order each epoch, the same for the same seed.
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let t = Instant::now();
        let train_loss = train_epoch(&mut net, prep, params, &order, (epoch, &mut done_steps), reporter)?;
        train_seconds += t.elapsed().as_secs_f64();
        epochs_run = epoch;
        metrics.push_at("train", "loss", epoch as i64, train_loss);
        let weight_of: WeightOf = &|u, i| prep.weight(u, i);
        let (heldout, loo_ranks) = score(&mut net, &prep.split.test_loo, &loo_masks, params.batch_size, weight_of)?;
        let heldout = heldout / prep.split.test_loo.len().max(1) as f64;
        metrics.push_at("train", "heldout_loss", epoch as i64, heldout);
        let loo = ranking::ranking_metrics(&loo_ranks, &params.ks);
        for &(k, r) in &loo.recall {
            metrics.push_at("train", &format!("loo_recall@{k}"), epoch as i64, r);
        }
        metrics.push_at("train", "loo_mrr", epoch as i64, loo.mrr);
        if let Some(patience) = params.patience {
            if best.as_ref().is_none_or(|(l, _, _)| heldout < *l) {
                best = Some((heldout, epoch, net.params()?));
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
    let examples_per_second = (train.len() * epochs_run) as f64 / train_seconds.max(1e-9);
    let trained = Trained { net, shape, epochs_run, best_epoch, train_seconds, examples_per_second };
    report_training(&trained, train.len(), params.patience.is_some(), metrics, reporter);
    Ok(trained)
}

/// One epoch's steps in `order`; the mean training loss. The steps run on one of rayon's threads, so that each
/// parallel kernel forks from a worker (its own queue) instead of waking the pool from outside and sleeping until
/// it is done.
fn train_epoch(
    net: &mut Network,
    prep: &Prepared<'_>,
    params: &ModelParams,
    order: &[usize],
    (epoch, done_steps): (usize, &mut u64),
    reporter: &dyn Reporter,
) -> Result<f64> {
    let t = Instant::now();
    let opts = TrainOptions {
        batch_size: params.batch_size,
        learning_rate: params.learning_rate,
        momentum: params.momentum,
        weight_decay: params.weight_decay,
    };
    let weight_of: WeightOf = &|u, i| prep.weight(u, i);
    let (mut loss_sum, mut seen) = (0.0, 0usize);
    rayon::scope(|_| -> Result<()> {
        for chunk in order.chunks(params.batch_size) {
            crate::runtime::interrupt::check()?;
            let batch = Batch::weighted(chunk.iter().map(|&i| &prep.split.train[i]), weight_of);
            net.train_step(&batch, &opts)?;
            seen += batch.len();
            *done_steps += 1;
            if *done_steps % crate::recommend::network::LOSS_LOG_STEPS as u64 == 0 || seen == order.len() {
                loss_sum += net.take_loss()?;
                let rate = seen as f64 / t.elapsed().as_secs_f64().max(1e-9);
                let message = format!(
                    "epoch {epoch}/{}: loss {:.4}, {rate:.0} examples/s",
                    params.epochs,
                    loss_sum / seen as f64
                );
                reporter.progress(*done_steps, &message);
            }
        }
        Ok(())
    })?;
    Ok(loss_sum / seen as f64)
}

/// The training's summary line and its metrics.
fn report_training(t: &Trained<'_>, examples: usize, patience: bool, metrics: &mut Metrics, reporter: &dyn Reporter) {
    let best = if patience { format!(", best epoch {}", t.best_epoch) } else { String::new() };
    reporter.stage_finished(
        "train",
        &format!("{} epochs × {examples} examples, {:.0} examples/s{best}", t.epochs_run, t.examples_per_second),
        t.train_seconds,
    );
    metrics.push("train", "epochs", t.epochs_run as f64);
    metrics.push("train", "best_epoch", t.best_epoch as f64);
    metrics.push("train", "examples", examples as f64);
    metrics.push("train", "seconds", t.train_seconds);
    metrics.push("train", "examples_per_second", t.examples_per_second);
    if let Some((_, negatives)) = t.net.sampling() {
        metrics.push("train", "negatives", negatives as f64);
    }
    metrics.push("train", "embedding_dim", t.shape.dim as f64);
}

/// The trained model against the popularity baseline on both protocols (stages `eval_model`, `eval_popularity`),
/// its items' cosine neighbours and, with labels and pairs, how well they agree with people (`similarity`).
pub fn evaluate(
    be: &dyn Backend,
    prep: &Prepared<'_>,
    mut trained: Trained<'_>,
    params: &ModelParams,
    (labels, pairs): (Option<&[Option<String>]>, Option<&[PairScore]>),
    metrics: &mut Metrics,
) -> Result<ModelOutput> {
    let split = &prep.split;
    let (last_masks, loo_masks) = (prep.masks(&split.test_last), prep.masks(&split.test_loo));
    let weight_of: WeightOf = &|u, i| prep.weight(u, i);
    let net = &mut trained.net;
    let (_, last_ranks) = score(net, &split.test_last, &last_masks, params.batch_size, weight_of)?;
    let (_, loo_ranks) = score(net, &split.test_loo, &loo_masks, params.batch_size, weight_of)?;
    push_ranking(metrics, "eval_model", "last", &ranking::ranking_metrics(&last_ranks, &params.ks));
    push_ranking(metrics, "eval_model", "loo", &ranking::ranking_metrics(&loo_ranks, &params.ks));
    let targets = |ex: &[Example]| ex.iter().map(|e| e.target).collect::<Vec<_>>();
    let pop_last = ranking::popularity_ranks(&prep.popularity, &targets(&split.test_last), &last_masks);
    let pop_loo = ranking::popularity_ranks(&prep.popularity, &targets(&split.test_loo), &loo_masks);
    push_ranking(metrics, "eval_popularity", "last", &ranking::ranking_metrics(&pop_last, &params.ks));
    push_ranking(metrics, "eval_popularity", "loo", &ranking::ranking_metrics(&pop_loo, &params.ks));

    // Similarity: cosine neighbours of the input embeddings.
    let (v, dim) = (trained.shape.items, trained.shape.dim);
    let k = params.neighbors.min(v - 1);
    let (neighbors, neighbor_cosines) = be.cosine_top_k(net.embedding_tensor(), v, dim, k)?;
    if let Some(labels) = labels {
        if let Some((agree, chance)) = ranking::label_agreement(&neighbors, k, labels) {
            metrics.push_at("similarity", "label_agreement", k as i64, agree);
            metrics.push_at("similarity", "label_agreement_chance", k as i64, chance);
        }
    }
    let host = net.params()?;
    if let Some(pairs) = pairs {
        pair_similarity(&prep.data.items, &host.emb, dim, pairs, metrics);
    }
    Ok(ModelOutput {
        shape: trained.shape,
        params: host,
        split_summary: prep.summary(params),
        popularity: prep.popularity.clone(),
        neighbors,
        neighbor_cosines,
        neighbors_per_item: k,
        epochs_run: trained.epochs_run,
        best_epoch: trained.best_epoch,
        train_seconds: trained.train_seconds,
        examples_per_second: trained.examples_per_second,
    })
}

/// Spearman's rank correlation of the model's cosines with people's scores of item pairs (pairs of unknown items
/// are counted and left out).
fn pair_similarity(items: &[String], emb: &[f32], dim: usize, pairs: &[PairScore], metrics: &mut Metrics) {
    let index: HashMap<&str, usize> = items.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let (mut human, mut model) = (Vec::new(), Vec::new());
    for (a, b, score) in pairs {
        if let (Some(&i), Some(&j)) = (index.get(a.as_str()), index.get(b.as_str())) {
            human.push(*score);
            model.push(ranking::cosine(&emb[i * dim..(i + 1) * dim], &emb[j * dim..(j + 1) * dim]));
        }
    }
    metrics.push("similarity", "pairs_used", human.len() as f64);
    metrics.push("similarity", "pairs_unknown_items", (pairs.len() - human.len()) as f64);
    if let Some(rho) = ranking::spearman(&human, &model) {
        metrics.push("similarity", "spearman", rho);
    }
}

/// Split, train and evaluate in one call (benchmarks and tests; the model stage runs the parts itself).
#[allow(clippy::too_many_arguments)]
pub fn run(
    be: &dyn Backend,
    data: &Interactions,
    params: &ModelParams,
    dim: usize,
    labels: Option<&[Option<String>]>,
    pairs: Option<&[PairScore]>,
    metrics: &mut Metrics,
    reporter: &dyn Reporter,
) -> Result<ModelOutput> {
    let prep = split_data(data, params)?;
    let trained = train(be, &prep, params, dim, metrics, reporter)?;
    evaluate(be, &prep, trained, params, (labels, pairs), metrics)
}
