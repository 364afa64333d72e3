//! `embjob bench catalogue`: what a training step and the held-out ranking cost as the catalogue grows, for the full
//! softmax and the sampled one, on generated Zipf catalogues (`crate::tools::catalogue`, the data `embjob gen-catalogue`
//! writes). Each size trains the MovieLens peer's network (d 32, 64 hidden units, batch 256, 4 inputs per example)
//! for a fixed number of steps after a warm-up (on the CPU or a GPU backend); the median over repeats is reported with the model's memory plan.

use std::io::Write;
use std::time::Instant;

use crate::error::Result;
use crate::recommend::network::{Batch, HostParams, LossSpec, Network, Optimizer, Shape, TrainOptions};
use crate::recommend::split::Example;
use crate::tools::catalogue::{self, CatalogueSpec};

/// Options of `embjob bench catalogue`.
#[derive(Debug, Clone)]
pub struct CatalogueBenchOptions {
    pub items: Vec<usize>,
    pub users: usize,
    pub per_user: usize,
    pub negatives: usize,
    /// Timed training steps per measurement (after 2 warm-up steps).
    pub steps: usize,
    /// Held-out examples ranked over all items per measurement.
    pub eval_examples: usize,
    pub repeats: usize,
    /// Which backend trains.
    pub backend: crate::plan::config::BackendChoice,
}

/// One (catalogue, loss) measurement.
#[derive(Debug, Clone)]
pub struct CatalogueMeasurement {
    pub items: usize,
    pub loss: String,
    pub examples_per_s: f64,
    pub ranked_per_s: f64,
    /// The model stage's memory plan, in bytes (its sum), and the logits buffer alone.
    pub plan_bytes: u64,
    pub logits_bytes: u64,
}

const DIM: usize = 32;
const HIDDEN: usize = 64;
const BATCH: usize = 256;
const INPUTS: usize = 4;

/// Training examples of a user list: each favourite is the target once, the next `INPUTS` (cyclically) the inputs.
fn examples(lists: &[Vec<u32>]) -> Vec<Example> {
    let mut out = Vec::new();
    for (u, l) in lists.iter().enumerate() {
        for t in 0..l.len() {
            let inputs: Vec<u32> = (1..=INPUTS.min(l.len() - 1)).map(|k| l[(t + k) % l.len()]).collect();
            out.push(Example { user: u as u32, inputs, target: l[t] });
        }
    }
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark on the chosen backend; progress lines go to `log`.
pub fn catalogue(opts: &CatalogueBenchOptions, log: &mut dyn Write) -> Result<Vec<CatalogueMeasurement>> {
    let (be, report) = crate::backend::open(opts.backend)?;
    let be = be.as_ref();
    let _ = writeln!(log, "backend: {} ({})", report.used, report.reason);
    let mut out = Vec::new();
    for &v in &opts.items {
        let spec = CatalogueSpec { items: v, users: opts.users, per_user: opts.per_user, exponent: 1.0, seed: 17 };
        spec.check()?;
        let lists = catalogue::favourites(&spec);
        let ex = examples(&lists);
        let mut popularity = vec![0f64; v];
        lists.iter().flatten().for_each(|&i| popularity[i as usize] += 1.0);
        let shape = Shape { items: v, dim: DIM, hidden: HIDDEN, pooling: crate::recommend::network::Pooling::Mean };
        let params = HostParams::init(shape, crate::recommend::network::EmbeddingInit::Linear, 1);
        for (name, loss) in [
            ("softmax".to_owned(), LossSpec::Softmax),
            (
                format!("sampled_softmax ({} negatives)", opts.negatives),
                LossSpec::Sampled { negatives: opts.negatives, proposal: popularity.clone(), seed: 1 },
            ),
        ] {
            let negatives = matches!(loss, LossSpec::Sampled { .. }).then_some(opts.negatives);
            let plan = crate::recommend::network::memory_plan(v, DIM, HIDDEN, BATCH, negatives, report.used);
            let plan_bytes: u64 = plan.iter().map(|i| i.bytes).sum();
            let logits_bytes = plan.iter().find(|i| i.what.starts_with("logits")).map_or(0, |i| i.bytes);
            let (mut train, mut rank) = (Vec::new(), Vec::new());
            for _ in 0..opts.repeats.max(1) {
                let mut net = Network::with_loss(be, shape, &params, Optimizer::Adam, BATCH, INPUTS, &loss)?;
                let (examples_per_s, ranked_per_s) = measure(&mut net, &ex, &lists, opts)?;
                train.push(examples_per_s);
                rank.push(ranked_per_s);
            }
            let m = CatalogueMeasurement {
                items: v,
                loss: name,
                examples_per_s: median(&mut train),
                ranked_per_s: median(&mut rank),
                plan_bytes,
                logits_bytes,
            };
            let _ = writeln!(
                log,
                "{v} items, {}: {:.0} examples/s, {:.0} held-out examples ranked/s, memory plan {}",
                m.loss,
                m.examples_per_s,
                m.ranked_per_s,
                crate::runtime::memory::human(m.plan_bytes)
            );
            out.push(m);
        }
    }
    Ok(out)
}

/// One measurement on a fresh network: training examples per second over `opts.steps` steps (after two to warm
/// up), and held-out examples ranked over all items per second.
fn measure(
    net: &mut Network<'_>,
    ex: &[Example],
    lists: &[Vec<u32>],
    opts: &CatalogueBenchOptions,
) -> Result<(f64, f64)> {
    let topts = TrainOptions { batch_size: BATCH, learning_rate: 0.01, momentum: 0.0, weight_decay: 0.0 };
    let batches: Vec<Batch> = ex.chunks(BATCH).take(opts.steps + 2).map(|c| Batch::new(c.iter())).collect();
    // As training steps an epoch: on one of rayon's threads.
    let rate = rayon::scope(|_| -> Result<f64> {
        for b in &batches[..2.min(batches.len())] {
            net.train_step(b, &topts)?;
        }
        net.take_loss()?;
        let t = Instant::now();
        let mut seen = 0;
        for b in batches.iter().skip(2) {
            net.train_step(b, &topts)?;
            seen += b.len();
        }
        net.take_loss()?;
        Ok(seen as f64 / t.elapsed().as_secs_f64())
    })?;
    // Held-out ranking over all items, in the network's evaluation batches.
    let held: Vec<&Example> = ex.iter().rev().take(opts.eval_examples).collect();
    let rows = net.eval_rows();
    let t = Instant::now();
    for chunk in held.chunks(rows) {
        let b = Batch::new(chunk.iter().copied());
        let masks: Vec<&[u32]> = chunk.iter().map(|e| &lists[e.user as usize][..]).collect();
        net.evaluate(&b, &masks)?;
    }
    Ok((rate, held.len() as f64 / t.elapsed().as_secs_f64()))
}

/// The measurements as a Markdown table.
pub fn catalogue_table(ms: &[CatalogueMeasurement]) -> String {
    let mut s = String::from(
        "| items | loss | training examples/s | held-out examples ranked/s | memory plan | of which logits |\n|---|---|---|---|---|---|\n",
    );
    for m in ms {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |\n",
            m.items,
            m.loss,
            m.examples_per_s,
            m.ranked_per_s,
            crate::runtime::memory::human(m.plan_bytes),
            crate::runtime::memory::human(m.logits_bytes)
        ));
    }
    s
}
