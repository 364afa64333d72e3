//! The backward pass equals finite differences of the loss for every parameter, for both poolings, with and
//! without a hidden layer; and the kernels keep their invariants (softmax rows sum to 1).

use embjob::backend::{cpu, Backend};
use embjob::linalg::rng::SplitMix;
use embjob::plan::config::{EmbeddingInit, Optimizer, Pooling};
use embjob::recommend::network::{Batch, HostParams, LossSpec, Network, Shape, TrainOptions};
use embjob::recommend::split::Example;

use crate::support::*;

fn examples(seed: u64, items: usize, count: usize) -> Vec<Example> {
    let mut rng = SplitMix::new(seed);
    (0..count)
        .map(|u| {
            let n_inputs = 1 + rng.below(3);
            let mut inputs: Vec<u32> = Vec::new();
            while inputs.len() < n_inputs {
                let it = rng.below(items) as u32;
                if !inputs.contains(&it) {
                    inputs.push(it);
                }
            }
            inputs.sort_unstable();
            Example { user: u as u32, inputs, target: rng.below(items) as u32 }
        })
        .collect()
}

fn loss_of(be: &dyn Backend, shape: Shape, params: &HostParams, batch: &Batch) -> f64 {
    let mut net = Network::new(be, shape, params, Optimizer::Adam, batch.len(), 4).expect("network");
    let masks: Vec<&[u32]> = vec![&[]; batch.len()];
    net.evaluate(batch, &masks).expect("evaluate").0
}

/// The gradients the network's backward pass leaves equal central finite differences of its loss.
fn check_on(be: &dyn Backend, shape: Shape) {
    // Larger-than-default weights so every ReLU is clearly on or off and differences are well above f32 noise.
    let mut params = HostParams::init(shape, EmbeddingInit::Normal, 7);
    params.w1.iter_mut().for_each(|w| *w *= 3.0);
    let ex = examples(3, shape.items, 5);
    // Unequal pooling weights, so the weighted paths are checked too.
    let batch = Batch::weighted(ex.iter(), |u, i| 0.5 + ((u * 7 + i) % 4) as f32 * 0.5);
    let mut net = Network::new(be, shape, &params, Optimizer::Sgd, batch.len(), 4).expect("network");
    let opts = TrainOptions { batch_size: 5, learning_rate: 1e-30, momentum: 0.0, weight_decay: 0.0 };
    net.train_step(&batch, &opts).expect("step");
    let grads = net.gradients().expect("grads");
    let rows = batch.len() as f64;
    let names = ["embedding", "w1", "b1", "w2", "b2"];
    for (part, name) in names.iter().enumerate() {
        let n = params.parts()[part].len();
        for i in 0..n {
            let eps = 1e-2f32;
            let mut plus = params.clone();
            let mut minus = params.clone();
            part_mut(&mut plus, part)[i] += eps;
            part_mut(&mut minus, part)[i] -= eps;
            let fd =
                (loss_of(be, shape, &plus, &batch) - loss_of(be, shape, &minus, &batch)) / (2.0 * eps as f64) / rows;
            let g = grads.parts()[part][i] as f64;
            assert!(
                (fd - g).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "{:?} {name}[{i}] ({shape:?}): backward {g} vs finite difference {fd}",
                be.kind()
            );
        }
    }
}

/// One of the parameters by its index in [`HostParams::parts`].
fn part_mut(p: &mut HostParams, part: usize) -> &mut Vec<f32> {
    match part {
        0 => &mut p.emb,
        1 => &mut p.w1,
        2 => &mut p.b1,
        3 => &mut p.w2,
        _ => &mut p.b2,
    }
}

fn gradients_equal_finite_differences_mean_pooling_with_hidden_layer(be: &dyn Backend) {
    check_on(be, Shape { items: 6, dim: 3, hidden: 4, pooling: Pooling::Mean });
}

fn gradients_equal_finite_differences_sum_pooling_with_hidden_layer(be: &dyn Backend) {
    check_on(be, Shape { items: 5, dim: 2, hidden: 3, pooling: Pooling::Sum });
}

fn gradients_equal_finite_differences_without_hidden_layer(be: &dyn Backend) {
    check_on(be, Shape { items: 7, dim: 3, hidden: 0, pooling: Pooling::Mean });
}

/// The summed sampled loss of a batch with fixed negative draws.
fn sampled_loss_of(
    be: &dyn Backend,
    shape: Shape,
    params: &HostParams,
    batch: &Batch,
    draws: &[u32],
    loss: &LossSpec,
) -> f64 {
    let mut net = Network::with_loss(be, shape, params, Optimizer::Adam, batch.len(), 4, loss).expect("network");
    net.sampled_backward(batch, draws).expect("sampled");
    net.take_loss().expect("loss")
}

/// The sampled softmax's backward pass equals finite differences of the sampled loss (same draws) for every
/// parameter, on every backend: log-Q corrections, the shared negatives, a target that is also drawn, another row's
/// target that is not (inactive for the other rows), and zero gradients outside the batch's rows and candidates.
fn check_sampled(be: &dyn Backend, shape: Shape) {
    let mut params = HostParams::init(shape, EmbeddingInit::Normal, 11);
    params.w1.iter_mut().for_each(|w| *w *= 3.0);
    let ex = examples(5, shape.items, 5);
    let batch = Batch::weighted(ex.iter(), |u, i| 0.5 + ((u * 5 + i) % 3) as f32 * 0.5);
    let proposal: Vec<f64> = (0..shape.items).map(|i| 1.0 + (i % 4) as f64).collect();
    let loss = LossSpec::Sampled { negatives: 6, proposal, seed: 1 };
    let draws: Vec<u32> = vec![2, 5, 5, ex[0].target, 9, 0];
    let mut net = Network::with_loss(be, shape, &params, Optimizer::Adam, batch.len(), 4, &loss).expect("network");
    net.sampled_backward(&batch, &draws).expect("backward");
    let (table, _) = net.sampling().expect("sampled");
    let columns = embjob::recommend::sampling::Candidates::new(table, &draws, &batch.targets).items;
    let grads = net.sampled_gradients(&batch.seg_items, &columns).expect("grads");
    let rows = batch.len() as f64;
    for (part, name) in ["embedding", "w1", "b1", "w2", "b2"].iter().enumerate() {
        for i in 0..params.parts()[part].len() {
            let eps = 1e-2f32;
            let (mut plus, mut minus) = (params.clone(), params.clone());
            part_mut(&mut plus, part)[i] += eps;
            part_mut(&mut minus, part)[i] -= eps;
            let fd = (sampled_loss_of(be, shape, &plus, &batch, &draws, &loss)
                - sampled_loss_of(be, shape, &minus, &batch, &draws, &loss))
                / (2.0 * eps as f64)
                / rows;
            let g = grads.parts()[part][i] as f64;
            assert!(
                (fd - g).abs() <= 2e-3 + 2e-2 * fd.abs(),
                "{:?} sampled {name}[{i}] ({shape:?}): backward {g} vs finite difference {fd}",
                be.kind()
            );
        }
    }
}

fn sampled_softmax_gradients_equal_finite_differences(be: &dyn Backend) {
    check_sampled(be, Shape { items: 12, dim: 3, hidden: 4, pooling: Pooling::Mean });
    check_sampled(be, Shape { items: 10, dim: 2, hidden: 0, pooling: Pooling::Sum });
}

#[test]
fn softmax_rows_sum_to_one_and_the_gradient_rows_to_zero() {
    let mut rng = SplitMix::new(1);
    let (rows, cols) = (6, 9);
    let mut logits: Vec<f32> = (0..rows * cols).map(|_| (rng.normal() * 30.0) as f32).collect();
    let targets: Vec<u32> = (0..rows).map(|_| rng.below(cols) as u32).collect();
    let mut losses = vec![0.0; rows];
    cpu::softmax_xent(&mut logits, &targets, cols, &mut losses);
    for r in 0..rows {
        let row = &logits[r * cols..(r + 1) * cols];
        // grad = (p - onehot) / rows, so rows·grad + onehot = p sums to 1.
        let p_sum: f64 = row.iter().map(|&g| g as f64 * rows as f64).sum::<f64>() + 1.0;
        assert!((p_sum - 1.0).abs() < 1e-5, "row {r}: softmax sums to {p_sum}");
        assert!(row.iter().all(|v| v.is_finite()), "large logits stay finite");
        assert!(losses[r].is_finite() && losses[r] >= 0.0);
    }
}

/// The CPU's blocked output layer (logits, softmax cross-entropy and all three gradients, a block of items at a time)
/// equals the unfused sequence it replaces (product, bias, softmax, column sums, two gradient products): for a partial last
/// block, for more blocks than groups (several blocks per group), and for targets in every block; and it gives the
/// same bits on one thread and on two.
#[test]
fn blocked_output_layer_equals_the_unfused_products_and_softmax() {
    for (rows, items, k) in [(37, 2 * cpu::OUTPUT_BLOCK + 19, 13), (9, 17 * cpu::OUTPUT_BLOCK + 5, 5)] {
        let mut rng = SplitMix::new(rows as u64);
        let mut normal = |n: usize, scale: f64| -> Vec<f32> { (0..n).map(|_| (rng.normal() * scale) as f32).collect() };
        let (pre, w, bias) = (normal(rows * k, 1.0), normal(k * items, 0.7), normal(items, 0.5));
        // Every other row's target in the last (partial) block, the rest spread over all blocks.
        let targets: Vec<u32> =
            (0..rows).map(|r| if r % 2 == 0 { (items - 1 - r) as u32 } else { ((r * 7919) % items) as u32 }).collect();
        let dims = |m, n, k| embjob::backend::MatDims { m, n, k };
        // The unfused sequence.
        let mut logits = vec![0.0; rows * items];
        cpu::matmul(&pre, false, &w, false, &mut logits, dims(rows, items, k), 0.0).expect("logits");
        let (mut want_losses, mut want_db) = (vec![0.0; rows], vec![0.0; items]);
        cpu::bias_act(&mut logits, &bias, items, embjob::backend::Activation::Identity);
        cpu::softmax_xent(&mut logits, &targets, items, &mut want_losses);
        cpu::column_sums(&logits, rows, items, &mut want_db);
        let mut want_dw = vec![0.0; k * items];
        cpu::matmul(&pre, true, &logits, false, &mut want_dw, dims(k, items, rows), 0.0).expect("dW");
        let mut want_dpre = vec![0.0; rows * k];
        cpu::matmul(&logits, false, &w, true, &mut want_dpre, dims(rows, k, items), 0.0).expect("dpre");
        // Blocked, on one thread and on two; every output starts as NaN, so a value it fails to write shows.
        let blocked = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let mut got =
                    [vec![f32::NAN; rows], vec![f32::NAN; k * items], vec![f32::NAN; items], vec![f32::NAN; rows * k]];
                let mut scratch = vec![f32::NAN; rows * items];
                let [losses, dw, db, dpre] = &mut got;
                let x =
                    cpu::OutputLayerIn { pre: &pre, w: &w, bias: &bias, targets: &targets, d: dims(rows, items, k) };
                let out =
                    cpu::OutputLayerOut { logits: &mut scratch, losses, w_grad: dw, bias_grad: db, pre_grad: dpre };
                cpu::output_layer_xent(x, out).expect("blocked output layer");
                got
            })
        };
        let got = blocked(1);
        let wants = [&want_losses, &want_dw, &want_db, &want_dpre];
        for (name, (g, w)) in ["losses", "dW", "bias gradient", "input gradient"].iter().zip(got.iter().zip(wants)) {
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in g.iter().zip(w.iter()).enumerate() {
                assert!((a - b).abs() <= 2e-5 * scale, "{rows}×{items}×{k} {name}[{i}]: blocked {a} vs unfused {b}");
            }
        }
        assert!(blocked(2) == got, "{rows}×{items}×{k}: two threads give the same bits");
    }
}

/// A target outside the catalogue is refused by the blocked output layer, not read out of bounds.
#[test]
fn blocked_output_layer_refuses_a_target_outside_the_catalogue() {
    let (rows, items, k) = (2, 10, 3);
    let (pre, w, bias) = (vec![0.1; rows * k], vec![0.2; k * items], vec![0.0; items]);
    let mut bufs =
        (vec![0.0; rows * items], vec![0.0; rows], vec![0.0; k * items], vec![0.0; items], vec![0.0; rows * k]);
    let x = cpu::OutputLayerIn {
        pre: &pre,
        w: &w,
        bias: &bias,
        targets: &[3, items as u32],
        d: embjob::backend::MatDims { m: rows, n: items, k },
    };
    let out = cpu::OutputLayerOut {
        logits: &mut bufs.0,
        losses: &mut bufs.1,
        w_grad: &mut bufs.2,
        bias_grad: &mut bufs.3,
        pre_grad: &mut bufs.4,
    };
    assert!(cpu::output_layer_xent(x, out).is_err());
}

on_each_backend!(
    gradients_equal_finite_differences_mean_pooling_with_hidden_layer,
    gradients_equal_finite_differences_sum_pooling_with_hidden_layer,
    gradients_equal_finite_differences_without_hidden_layer,
    sampled_softmax_gradients_equal_finite_differences,
);
