//! Every backend operation against its CPU twin (the kernels on plain slices in `embjob::backend::cpu`), through the
//! `Backend` traits only: each check is written once and runs on every backend as a test of its own
//! (`<check>::cpu`, `<check>::gpu`, as candle's `test_device!` does). Inputs are seeded; outputs are poisoned with
//! NaN before each run, so an unwritten element fails; values agree to 1e-4 relative (the GPU sums in f32 in other
//! orders). The GPU tests run wherever an adapter exists (lavapipe counts); with EMBJOB_REQUIRE_GPU=1 a missing
//! adapter fails them instead of skipping.

use embjob::backend::cpu;
use embjob::backend::{
    Activation, AdamStep, AttentionShape, Backend, Bags, Dropout, EmbeddingTables, Indices, LayerNorm, MatDims,
    PoolMode, RankMasks, SampledColumns, Selected, SeqShape, SgdStep, Tensor, TokenRows, NO_ROW,
};
use embjob::linalg::rng::SplitMix;
use embjob::linalg::sparse::Csr;

use crate::support::on_each_backend;

on_each_backend!(
    matmul_with_every_transpose,
    matmul_refuses_short_operands_and_overflowing_shapes,
    gemm_shapes_that_overflow_are_errors,
    softmax_xent_stays_finite,
    embedding_bag_forward_and_backward,
    bias_activation_relu_and_column_sums,
    adam_and_sgd_steps,
    adam_follows_the_step_count,
    sparse_products,
    target_ranks_with_masks_and_ties,
    cosine_neighbours,
    encoder_operations,
    attention_over_long_sequences_and_wide_heads,
    sampled_softmax_operations,
    reads_started_early_hold_the_values_of_their_start,
    linear_rows_depend_on_their_input_row_alone,
);

pub fn random(seed: u64, n: usize, scale: f64) -> Vec<f32> {
    let mut r = SplitMix::new(seed);
    (0..n).map(|_| (r.normal() * scale) as f32).collect()
}

pub fn poison(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

/// `got` equals `want` to 1e-4 relative; a NaN or infinity never passes.
pub fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, c)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g} (unwritten or not finite)");
        assert!((g - c).abs() <= 1e-4 * scale.max(c.abs()), "{what}[{i}]: {g} vs the CPU twin's {c}");
    }
}

fn tensor(be: &dyn Backend, v: &[f32]) -> Tensor {
    be.tensor(v).expect("tensor")
}

fn indices(be: &dyn Backend, v: &[u32]) -> Indices {
    let mut t = be.index_buffer(v.len()).expect("index buffer");
    be.write_indices(&mut t, v).expect("indices");
    t
}

fn read(be: &dyn Backend, t: &Tensor) -> Vec<f32> {
    be.read(t).expect("read")
}

fn matmul_with_every_transpose(be: &dyn Backend) {
    // The last two shapes split k on the GPU (few output tiles, long k). Plain (beta 0), accumulating (beta 0.5),
    // and as a dense layer (bias and an activation that changes with the shape and transposes).
    let acts = [Activation::Identity, Activation::Relu, Activation::Gelu, Activation::GeluTanh];
    let shapes = [(1, 1, 1), (7, 5, 3), (65, 70, 33), (37, 29, 3000), (130, 70, 1500)];
    for (s, (m, n, k)) in shapes.into_iter().enumerate() {
        for (t, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)].into_iter().enumerate() {
            let (a, b, c0, bias) =
                (random(1, m * k, 1.0), random(2, k * n, 1.0), random(3, m * n, 1.0), random(4, n, 3.0));
            let d = MatDims { m, n, k };
            let (ga, gb) = (tensor(be, &a), tensor(be, &b));
            for beta in [0.0f32, 0.5] {
                let mut want = c0.clone();
                cpu::matmul(&a, ta, &b, tb, &mut want, d, beta).expect("cpu matmul");
                let start = if beta == 0.0 { poison(m * n) } else { c0.clone() };
                let c = tensor(be, &start);
                be.matmul(&ga, ta, &gb, tb, &c, d, beta).expect("matmul");
                assert_close(&read(be, &c), &want, &format!("matmul {m}×{n}×{k} ta={ta} tb={tb} beta={beta}"));
            }
            let act = acts[(s + t) % acts.len()];
            let mut want = vec![0.0; m * n];
            cpu::matmul(&a, ta, &b, tb, &mut want, d, 0.0).expect("cpu matmul");
            cpu::bias_act(&mut want, &bias, n, act);
            let c = tensor(be, &poison(m * n));
            be.matmul_bias_act(&ga, ta, &gb, tb, &c, d, &tensor(be, &bias), act).expect("matmul_bias_act");
            assert_close(&read(be, &c), &want, &format!("dense layer {m}×{n}×{k} ta={ta} tb={tb} {act:?}"));
        }
    }
}

fn matmul_refuses_short_operands_and_overflowing_shapes(be: &dyn Backend) {
    // The GPU's GEMM kernels run without bounds checks and the CPU's take raw views: both check the operands
    // against the shape first, with checked arithmetic, so a shape whose product wraps is an error, not a read out
    // of bounds.
    let (a, b, c) = (tensor(be, &[1.0; 6]), tensor(be, &[1.0; 6]), tensor(be, &[0.0; 4]));
    be.matmul(&a, false, &b, false, &c, MatDims { m: 2, n: 2, k: 3 }, 0.0).expect("a product that fits");
    for d in [
        MatDims { m: 3, n: 2, k: 3 },
        MatDims { m: 2, n: 2, k: 4 },
        // m·k wraps to 0 in 64 bits: 2^33 · 2^31 = 2^64.
        MatDims { m: 1 << 33, n: 1, k: 1 << 31 },
        MatDims { m: 2, n: 1 << 62, k: 4 },
        MatDims { m: usize::MAX, n: usize::MAX, k: usize::MAX },
    ] {
        let err = be.matmul(&a, false, &b, false, &c, d, 0.0).expect_err("operands smaller than the shape");
        assert!(err.to_string().contains("too small"), "{d:?}: {err}");
        assert_eq!(err.exit_code(), embjob::error::exit_code::INTERNAL, "{d:?}");
    }
    let short_bias = tensor(be, &[1.0]);
    let err = be
        .matmul_bias_act(&a, false, &b, false, &c, MatDims { m: 2, n: 2, k: 3 }, &short_bias, Activation::Relu)
        .expect_err("a bias shorter than n");
    assert!(err.to_string().contains("bias") || err.to_string().contains("shape"), "{err}");
    // The output may not alias an operand.
    assert!(be.matmul(&a, false, &b, false, &a, MatDims { m: 2, n: 2, k: 3 }, 0.0).is_err());
}

/// A host product whose output's size overflows (2^40 × 2^40 from two empty matrices) is an error on every backend,
/// not a wrapped length handed to a raw GEMM.
fn gemm_shapes_that_overflow_are_errors(be: &dyn Backend) {
    use embjob::linalg::dense::Matrix;
    let (a, b) = (Matrix::zeros(1 << 40, 0).expect("no values"), Matrix::zeros(0, 1 << 40).expect("no values"));
    assert!(be.gemm(&a, false, &b, false).is_err(), "a 2^40 × 2^40 product");
    assert!(be.gemm(&b, true, &a, true).is_err(), "the same, transposed");
}

#[test]
fn a_matrix_whose_shape_overflows_is_an_error() {
    use embjob::linalg::dense::Matrix;
    // 2^33 · 2^31 wraps to 0 in 64 bits: an unchecked product would make an empty buffer with that shape.
    assert!(Matrix::zeros(1 << 33, 1 << 31).is_err());
    assert!(Matrix::zeros(usize::MAX, 2).is_err());
    assert!(Matrix::from_fn(1 << 33, 1 << 31, |_, _| 0.0).is_err());
    assert!(Matrix::from_vec(1 << 33, 1 << 31, Vec::new()).is_err());
    let m = Matrix::zeros(3, 4).expect("3 × 4");
    assert_eq!((m.rows(), m.cols(), m.data().len()), (3, 4, 12));
}

fn softmax_xent_stays_finite(be: &dyn Backend) {
    for (rows, cols) in [(1, 3), (5, 300), (17, 1000)] {
        let logits = random(4, rows * cols, 20.0);
        let mut r = SplitMix::new(5);
        let targets: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let (mut want, mut want_loss) = (logits.clone(), vec![0.0; rows]);
        cpu::softmax_xent(&mut want, &targets, cols, &mut want_loss);
        let (gl, loss) = (tensor(be, &logits), tensor(be, &poison(rows)));
        be.softmax_xent(&gl, &indices(be, &targets), rows, cols, &loss).expect("softmax_xent");
        assert_close(&read(be, &gl), &want, &format!("softmax gradient {rows}×{cols}"));
        assert_close(&read(be, &loss), &want_loss, &format!("softmax loss {rows}×{cols}"));
    }
}

fn embedding_bag_forward_and_backward(be: &dyn Backend) {
    let (v, d, b) = (40, 5, 23);
    let table = random(6, v * d, 1.0);
    let mut r = SplitMix::new(7);
    // Weighted bags of 1 to 4 items: weight = 0.5 + (user + item) % 3.
    let examples: Vec<embjob::recommend::split::Example> = (0..b)
        .map(|u| embjob::recommend::split::Example {
            user: u as u32,
            inputs: (0..1 + r.below(4)).map(|_| r.below(v) as u32).collect(),
            target: 0,
        })
        .collect();
    let batch = embjob::recommend::network::Batch::weighted(examples.iter(), |u, i| 0.5 + ((u + i) % 3) as f32);
    let (weights, seg_weights) = (tensor(be, &batch.weights), tensor(be, &batch.seg_weights));
    let (items, offsets) = (indices(be, &batch.items), indices(be, &batch.offsets));
    let (seg_items, seg_offsets, seg_examples) =
        (indices(be, &batch.seg_items), indices(be, &batch.seg_offsets), indices(be, &batch.seg_examples));
    let bags = Bags {
        bags: b,
        items: &items,
        offsets: &offsets,
        weights: &weights,
        seg_weights: &seg_weights,
        seg_items: &seg_items,
        seg_offsets: &seg_offsets,
        seg_examples: &seg_examples,
    };
    for mean in [false, true] {
        let mut want = vec![0.0; b * d];
        cpu::embedding_bag(&table, d, &batch.items, &batch.offsets, &batch.weights, mean, &mut want);
        let out = tensor(be, &poison(b * d));
        be.embedding_bag(&tensor(be, &table), d, &bags, mean, &out).expect("embedding_bag");
        assert_close(&read(be, &out), &want, &format!("embedding bag mean={mean}"));

        let d_pooled = random(8, b * d, 1.0);
        let mut want = vec![f32::NAN; v * d];
        cpu::embedding_bag_backward(
            &d_pooled,
            d,
            &batch.offsets,
            &batch.weights,
            &batch.seg_items,
            &batch.seg_offsets,
            &batch.seg_examples,
            &batch.seg_weights,
            mean,
            &mut want,
            true,
        );
        let dp = tensor(be, &d_pooled);
        let grad = tensor(be, &poison(v * d));
        be.embedding_bag_backward(&dp, d, &bags, mean, &grad, true).expect("backward");
        assert_close(&read(be, &grad), &want, &format!("embedding gradient mean={mean}"));
        // Without zeroing (lazy optimizers): the batch's rows are written, every other row is left as it was.
        let grad = tensor(be, &poison(v * d));
        be.embedding_bag_backward(&dp, d, &bags, mean, &grad, false).expect("backward");
        let got = read(be, &grad);
        for item in 0..v {
            let row = item * d..(item + 1) * d;
            if batch.seg_items.contains(&(item as u32)) {
                assert_close(&got[row.clone()], &want[row], &format!("touched row {item}"));
            } else {
                assert!(got[row].iter().all(|x| x.is_nan()), "untouched row {item} was written");
            }
        }
    }
}

fn bias_activation_relu_and_column_sums(be: &dyn Backend) {
    let (rows, cols) = (37, 19);
    let x: Vec<f32> = random(9, rows * cols, 4.0); // GELU's tails, and tanh past its f32 range
    let bias = random(10, cols, 1.0);
    for act in [Activation::Identity, Activation::Relu, Activation::Gelu, Activation::GeluTanh] {
        let mut want = x.clone();
        cpu::bias_act(&mut want, &bias, cols, act);
        let gx = tensor(be, &x);
        be.bias_act(&gx, &tensor(be, &bias), rows, cols, act).expect("bias_act");
        assert_close(&read(be, &gx), &want, &format!("bias_act {act:?}"));
    }
    let (act, grad) = (random(11, rows * cols, 1.0), random(12, rows * cols, 1.0));
    let mut want = grad.clone();
    cpu::relu_backward(&mut want, &act);
    let gg = tensor(be, &grad);
    be.relu_backward(&gg, &tensor(be, &act)).expect("relu_backward");
    assert_close(&read(be, &gg), &want, "relu_backward");
    // Short (one pass) and tall (in chunks of rows, then the chunks) column sums.
    for (rows, cols) in [(rows, cols), (1000, 70)] {
        let x = random(11, rows * cols, 1.0);
        let mut want = vec![0.0; cols];
        cpu::column_sums(&x, rows, cols, &mut want);
        let out = tensor(be, &poison(cols));
        be.column_sums(&tensor(be, &x), rows, cols, &out).expect("column_sums");
        assert_close(&read(be, &out), &want, &format!("column_sums {rows}×{cols}"));
    }
}

fn adam_and_sgd_steps(be: &dyn Backend) {
    let n = 1000;
    let (p0, grad) = (random(13, n, 1.0), random(14, n, 0.1));
    let (m0, v0) = (random(15, n, 0.01), random(16, n, 0.01).iter().map(|x| x.abs()).collect::<Vec<_>>());
    // Step 3 (a jump: a new run), then step 4 (the next).
    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
    let (gp, gg, gm, gv) = (tensor(be, &p0), tensor(be, &grad), tensor(be, &m0), tensor(be, &v0));
    for t in [3, 4] {
        let step = AdamStep { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, t };
        cpu::adam(&mut p, &grad, &mut m, &mut v, step);
        be.adam(&gp, &gg, &gm, &gv, step).expect("adam");
        assert_close(&read(be, &gp), &p, &format!("adam param, step {t}"));
        assert_close(&read(be, &gm), &m, &format!("adam m, step {t}"));
        assert_close(&read(be, &gv), &v, &format!("adam v, step {t}"));
    }
    let (mut p, mut vel) = (p0.clone(), m0.clone());
    cpu::sgd(&mut p, &grad, &mut vel, 0.1, 0.9, 0.001);
    let (gp, gvel) = (tensor(be, &p0), tensor(be, &m0));
    be.sgd(&gp, &gg, &gvel, SgdStep { lr: 0.1, momentum: 0.9, weight_decay: 0.001 }).expect("sgd");
    assert_close(&read(be, &gp), &p, "sgd param");
    assert_close(&read(be, &gvel), &vel, "sgd velocity");
}

/// A run of Adam steps on two parameters (t = 1, 2, 3), then a new run (t = 1 again) and a jump (t = 7): the
/// backend's step state follows every step as the CPU twin's arithmetic does.
fn adam_follows_the_step_count(be: &dyn Backend) {
    let a = [random(21, 300, 1.0), random(22, 300, 0.1), vec![0.0; 300], vec![0.0; 300]];
    let b = [random(23, 70, 1.0), random(24, 70, 0.1), vec![0.0; 70], vec![0.0; 70]];
    let (mut wa, mut wb) = (a.clone(), b.clone());
    let ta: Vec<Tensor> = a.iter().map(|x| tensor(be, x)).collect();
    let tb: Vec<Tensor> = b.iter().map(|x| tensor(be, x)).collect();
    for t in [1, 2, 3, 1, 7] {
        let step = AdamStep { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, t };
        be.adam(&ta[0], &ta[1], &ta[2], &ta[3], step).expect("adam");
        be.adam(&tb[0], &tb[1], &tb[2], &tb[3], step).expect("adam");
        let [p, g, m, v] = &mut wa;
        cpu::adam(p, g, m, v, step);
        let [p, g, m, v] = &mut wb;
        cpu::adam(p, g, m, v, step);
    }
    assert_close(&read(be, &ta[0]), &wa[0], "param a after five steps");
    assert_close(&read(be, &tb[0]), &wb[0], "param b after five steps");
}

/// A seeded sparse matrix with empty rows and columns.
fn sparse(seed: u64, rows: usize, cols: usize) -> Csr {
    let mut r = SplitMix::new(seed);
    let data: Vec<Vec<(u32, f64)>> = (0..rows)
        .map(|i| {
            if i % 7 == 3 {
                return Vec::new();
            }
            let mut row = Vec::new();
            for c in 0..cols {
                if c % 5 != 2 && r.below(3) == 0 {
                    row.push((c as u32, r.normal()));
                }
            }
            row
        })
        .collect();
    Csr::from_rows(cols, &data)
}

/// `op(a)·op(b)` of dense row-major f64 matrices, summed in f64.
fn dense_product(
    a: &[f64],
    (ar, ac): (usize, usize),
    ta: bool,
    b: &[f64],
    (br, bc): (usize, usize),
    tb: bool,
) -> Vec<f32> {
    let (m, k) = if ta { (ac, ar) } else { (ar, ac) };
    let n = if tb { br } else { bc };
    let at = |i: usize, j: usize| if ta { a[j * ac + i] } else { a[i * ac + j] };
    let bt = |i: usize, j: usize| if tb { b[j * bc + i] } else { b[i * bc + j] };
    (0..m * n).map(|e| (0..k).map(|c| at(e / n, c) * bt(c, e % n)).sum::<f64>() as f32).collect()
}

fn sparse_products(be: &dyn Backend) {
    let (rows, cols, k) = (45, 70, 6);
    let x = sparse(21, rows, cols);
    let xd = x.to_dense();
    let f32s = |m: &embjob::linalg::dense::Matrix| m.data().iter().map(|&v| v as f32).collect::<Vec<f32>>();
    let b: Vec<f64> = random(22, cols * k, 1.0).iter().map(|&v| f64::from(v)).collect();
    let bm = embjob::linalg::dense::Matrix::from_vec(cols, k, b.clone()).expect("b");
    let want = dense_product(&xd, (rows, cols), false, &b, (cols, k), false);
    assert_close(&f32s(&be.csr_mul(&x, &bm).expect("csr_mul")), &want, "X·B");
    let bt: Vec<f64> = random(23, rows * k, 1.0).iter().map(|&v| f64::from(v)).collect();
    let btm = embjob::linalg::dense::Matrix::from_vec(rows, k, bt.clone()).expect("b");
    let want = dense_product(&xd, (rows, cols), true, &bt, (rows, k), false);
    assert_close(&f32s(&be.csr_t_mul(&x, &btm).expect("csr_t_mul")), &want, "Xᵀ·B");
    let want = dense_product(&xd, (rows, cols), false, &xd, (rows, cols), true);
    assert_close(&f32s(&be.outer_csr(&x).expect("outer")), &want, "X·Xᵀ");
    let want = dense_product(&xd, (rows, cols), true, &xd, (rows, cols), false);
    assert_close(&f32s(&be.gram_csr(&x).expect("gram")), &want, "XᵀX");
    let xtx: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
    let want = dense_product(&xtx, (cols, cols), false, &b, (cols, k), false);
    assert_close(&f32s(&be.csr_gram_mul(&x, &bm).expect("csr_gram_mul")), &want, "XᵀX·B");
    // The dense f64 product of PCA, on the same operands.
    let dm = embjob::linalg::dense::Matrix::from_vec(rows, cols, xd.clone()).expect("dense x");
    let want = dense_product(&xd, (rows, cols), true, &bt, (rows, k), false);
    assert_close(&f32s(&be.gemm(&dm, true, &btm, false).expect("gemm")), &want, "dense Xᵀ·B");
}

fn target_ranks_with_masks_and_ties(be: &dyn Backend) {
    for (rows, cols) in [(1, 1), (9, 70), (40, 1000)] {
        // Scores on a coarse grid, so ties are common (a tie does not outrank the target).
        let scores: Vec<f32> = random(23, rows * cols, 3.0).iter().map(|v| v.round()).collect();
        let mut r = SplitMix::new(24);
        let targets: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
        let (mut mask_items, mut mask_offsets) = (Vec::new(), vec![0u32]);
        for (row, &t) in targets.iter().enumerate() {
            for _ in 0..row % 4 {
                mask_items.push(r.below(cols) as u32);
            }
            if row % 3 == 0 {
                mask_items.push(t); // the target itself is never masked
            }
            mask_offsets.push(mask_items.len() as u32);
        }
        let mut want = vec![f32::NAN; rows];
        cpu::target_ranks(&scores, cols, &targets, &mask_items, &mask_offsets, &mut want);
        let (t, mi, mo) = (indices(be, &targets), indices(be, &mask_items), indices(be, &mask_offsets));
        let ranks = tensor(be, &poison(rows));
        let masks = RankMasks { targets: &t, mask_items: &mi, mask_offsets: &mo };
        be.target_ranks(&tensor(be, &scores), rows, cols, &masks, &ranks).expect("target_ranks");
        assert_eq!(read(be, &ranks), want, "ranks {rows}×{cols}");
        assert!(want.iter().all(|&x| x >= 1.0 && x <= cols as f32));
    }
}

fn cosine_neighbours(be: &dyn Backend) {
    let (n, d) = (300, 7);
    let x = random(17, n * d, 1.0);
    // Within the GPU kernel's 64 per row, and beyond (ranked on the host).
    for k in [10, 70] {
        let (want_idx, want_sim) = cpu::cosine_top_k(&x, n, d, k).expect("cpu top k");
        let (idx, sim) = be.cosine_top_k(&tensor(be, &x), n, d, k).expect("top k");
        assert_close(&sim, &want_sim, "cosines");
        // Neighbours agree except where two cosines tie within rounding.
        let same = idx.iter().zip(&want_idx).filter(|(a, b)| a == b).count();
        assert!(same as f64 >= 0.99 * (n * k) as f64, "only {same} of {} neighbours agree", n * k);
        for r in 0..n {
            assert!(!idx[r * k..(r + 1) * k].contains(&(r as u32)), "row {r} lists itself");
            assert!(sim[r * k..(r + 1) * k].windows(2).all(|w| w[0] >= w[1]), "row {r} not in descending order");
        }
    }
}

fn linear_rows_depend_on_their_input_row_alone(be: &dyn Backend) {
    // The encoder's dense layer: each output row equals, bit for bit, the same input row's output in a batch of
    // one, in a batch of 600 and in a shuffled batch of 130 (k = 1,100: a long k that a small product would split;
    // 600 rows span several of the CPU's row blocks and the GPU's tiles), and matches matmul_bias_act.
    let (m, n, k) = (600usize, 96usize, 1100usize);
    let x = random(71, m * k, 1.0);
    let (wt, bias) = (tensor(be, &random(72, n * k, 0.05)), tensor(be, &random(73, n, 0.1)));
    let run = |rows: &[usize]| -> Vec<f32> {
        let xs: Vec<f32> = rows.iter().flat_map(|&r| x[r * k..(r + 1) * k].iter().copied()).collect();
        let (xt, out) = (tensor(be, &xs), tensor(be, &poison(rows.len() * n)));
        be.linear(&xt, &wt, &out, MatDims { m: rows.len(), n, k }, &bias, Activation::Gelu).expect("linear");
        be.read(&out).expect("read")
    };
    let all: Vec<usize> = (0..m).collect();
    let full = run(&all);
    let shuffled: Vec<usize> = (0..130).map(|i| (i * 37 + 11) % m).collect();
    let part = run(&shuffled);
    for (i, &r) in shuffled.iter().enumerate() {
        assert_eq!(part[i * n..(i + 1) * n], full[r * n..(r + 1) * n], "{:?}: row {r} in another batch", be.kind());
    }
    for r in [0usize, 255, 256, 599] {
        assert_eq!(run(&[r]), full[r * n..(r + 1) * n], "{:?}: row {r} alone", be.kind());
    }
    let (xt, want) = (tensor(be, &x), tensor(be, &poison(m * n)));
    be.matmul_bias_act(&xt, false, &wt, true, &want, MatDims { m, n, k }, &bias, Activation::Gelu).expect("mm");
    assert_close(&full, &be.read(&want).expect("read"), "linear against matmul_bias_act");
}

fn reads_started_early_hold_the_values_of_their_start(be: &dyn Backend) {
    // A read started, then more work on the same tensor (an overwrite, a product into it), then the read taken:
    // it holds the tensor as it was at the start, truncated to the length asked for; f16 tensors read back too.
    let before = random(61, 48, 1.0);
    let t = tensor(be, &before);
    let first = be.start_read(&t, 40).expect("start");
    be.write(&t, &random(62, 48, 1.0)).expect("overwrite");
    let (a, b) = (tensor(be, &random(63, 4 * 3, 1.0)), tensor(be, &random(64, 3 * 12, 1.0)));
    be.matmul(&a, false, &b, false, &t, MatDims { m: 4, k: 3, n: 12 }, 0.0).expect("product");
    let second = be.start_read(&t, 48).expect("start again");
    assert_eq!(be.finish_read(first).expect("finish"), before[..40].to_vec());
    let now = be.read(&t).expect("read");
    assert_eq!(be.finish_read(second).expect("finish again"), now, "the product's result");
    assert!(be.start_read(&t, 49).is_err(), "a read past the tensor's end");
    if !matches!(be.f16_support().expect("f16 support"), embjob::backend::F16Support::None(_)) {
        let h = be.tensor_f16(&before).expect("f16");
        let v = be.finish_read(be.start_read(&h, 5).expect("start f16")).expect("finish f16");
        let want: Vec<f32> = before[..5].iter().map(|&x| half::f16::from_f32(x).to_f32()).collect();
        assert_eq!(v, want);
    }
}

fn encoder_operations(be: &dyn Backend) {
    // Three sequences padded to 7 tokens (lengths 7, 4, 1), 2 heads of 3 (an odd head size), width 6.
    let (batch, seq, heads, head_dim) = (3usize, 7usize, 2usize, 3usize);
    let (cols, rows, vocab, types) = (heads * head_dim, batch * seq, 11usize, 2usize);
    let lens = [7u32, 4, 1];
    let mut r = SplitMix::new(31);
    let ids: Vec<u32> = (0..rows).map(|_| r.below(vocab) as u32).collect();
    let type_ids: Vec<u32> = (0..rows).map(|_| r.below(types) as u32).collect();
    let (word, pos, ty) =
        (random(32, vocab * cols, 1.0), random(33, (seq + 2) * cols, 1.0), random(34, types * cols, 1.0));
    let (gamma, beta) = (random(35, cols, 1.0), random(36, cols, 0.5));
    let eps = 1e-12f32;
    let (gids, gtypes, glens) = (indices(be, &ids), indices(be, &type_ids), indices(be, &lens));
    let (gw, gp, gt, gg, gb) =
        (tensor(be, &word), tensor(be, &pos), tensor(be, &ty), tensor(be, &gamma), tensor(be, &beta));

    // Embeddings + LayerNorm, with a position offset of 2 (RoBERTa's).
    let mut want = vec![f32::NAN; rows * cols];
    cpu::embed_layernorm((&word, &pos, &ty), &ids, &type_ids, seq, 2, (&gamma, &beta, eps), cols, &mut want);
    let out = tensor(be, &poison(rows * cols));
    let ln = LayerNorm { gamma: &gg, beta: &gb, eps };
    let tables = EmbeddingTables { word: &gw, position: &gp, token_type: &gt, ln, cols, position_offset: 2 };
    be.embed_layernorm(&tables, &TokenRows { ids: &gids, type_ids: &gtypes, seq }, &out).expect("embed_layernorm");
    assert_close(&read(be, &out), &want, "embed_layernorm");

    // Residual + LayerNorm.
    let (x, res) = (random(37, rows * cols, 2.0), random(38, rows * cols, 1.0));
    let mut want = x.clone();
    cpu::add_layernorm(&mut want, &res, cols, (&gamma, &beta, 1e-5));
    let gx = tensor(be, &x);
    be.add_layernorm(&gx, &tensor(be, &res), rows, &LayerNorm { gamma: &gg, beta: &gb, eps: 1e-5 }).expect("add_ln");
    assert_close(&read(be, &gx), &want, "add_layernorm");

    // Attention with the padding mask: padded keys must not count, so poison them.
    let mut qkv = random(39, rows * 3 * cols, 1.5);
    for (b, &len) in lens.iter().enumerate() {
        for t in len as usize..seq {
            qkv[(b * seq + t) * 3 * cols + cols..(b * seq + t + 1) * 3 * cols].iter_mut().for_each(|v| *v = 1e30);
        }
    }
    // In training, with the probabilities' dropout too: both backends draw the same mask.
    for dropout in [None, Dropout::new(0.3, 11, 2, 5)] {
        let shape = AttentionShape { batch, seq, heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), dropout };
        let mut want = vec![f32::NAN; rows * cols];
        cpu::attention(&qkv, &lens, batch, seq, heads, head_dim, shape.scale, dropout, &mut want)
            .expect("cpu attention");
        assert!(want.iter().all(|v| v.is_finite() && v.abs() < 100.0), "the CPU twin counted padding");
        let out = tensor(be, &poison(rows * cols));
        be.attention(&tensor(be, &qkv), &glens, shape, &out).expect("attention");
        assert_close(&read(be, &out), &want, &format!("attention, dropout {dropout:?}"));
    }

    // Pooling (mean over the real tokens, first token, max) and l2 normalisation.
    let hidden = random(40, rows * cols, 1.0);
    let gh = tensor(be, &hidden);
    for mode in [PoolMode::Mean, PoolMode::Cls, PoolMode::Max] {
        let mut want = vec![f32::NAN; batch * cols];
        cpu::pool(&hidden, &lens, seq, cols, mode, &mut want);
        let out = tensor(be, &poison(batch * cols));
        be.pool(&gh, &glens, SeqShape { batch, seq, cols }, mode, &out).expect("pool");
        assert_close(&read(be, &out), &want, &format!("pool {mode:?}"));
    }
    let mut x = random(41, 5 * cols, 3.0);
    x[..cols].iter_mut().for_each(|v| *v = 0.0); // a zero row stays zero
    let mut want = x.clone();
    cpu::l2_normalize(&mut want, cols);
    let gx = tensor(be, &x);
    be.l2_normalize(&gx, 5, cols).expect("l2_normalize");
    assert_close(&read(be, &gx), &want, "l2_normalize");
}

/// Attention past one block of queries and one tile of keys (the GPU kernel takes 64 queries and up to 64 keys a
/// tile, fewer keys for wider heads): 150 and 97 real tokens of 150 padded, an empty sequence (all zeros), heads of
/// 32 (BERT-base's 64 / MiniLM's 32 family) and 128 (the widest the GPU kernel takes); and bit-identical reruns.
fn attention_over_long_sequences_and_wide_heads(be: &dyn Backend) {
    for (heads, head_dim) in [(3usize, 32usize), (2, 128)] {
        let (batch, seq) = (3usize, 150usize);
        let cols = heads * head_dim;
        let lens = [150u32, 97, 0];
        let mut qkv = random(42, batch * seq * 3 * cols, 1.0);
        for (b, &len) in lens.iter().enumerate() {
            for t in len as usize..seq {
                qkv[(b * seq + t) * 3 * cols + cols..(b * seq + t + 1) * 3 * cols].iter_mut().for_each(|v| *v = 1e30);
            }
        }
        let shape =
            AttentionShape { batch, seq, heads, head_dim, scale: 1.0 / (head_dim as f32).sqrt(), dropout: None };
        let mut want = vec![f32::NAN; batch * seq * cols];
        cpu::attention(&qkv, &lens, batch, seq, heads, head_dim, shape.scale, None, &mut want).expect("cpu attention");
        let (gq, gl) = (tensor(be, &qkv), indices(be, &lens));
        let run = || {
            let out = tensor(be, &poison(batch * seq * cols));
            be.attention(&gq, &gl, shape, &out).expect("attention");
            read(be, &out)
        };
        let got = run();
        assert_close(&got, &want, &format!("attention, heads of {head_dim}"));
        assert!(got[2 * seq * cols..].iter().all(|&v| v == 0.0), "an empty sequence attends to nothing");
        let again = run();
        assert!(got.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "reruns are bit-identical");
    }
}

/// The sampled softmax's operations on poisoned outputs: candidates' rows and columns gathered (rows of padding
/// as zeros), the loss and
/// gradient over shared negatives and each row's own target (inactive columns exactly 0), and lazy Adam on
/// selected columns of a row-major matrix and on rows with a full-size gradient (everything else untouched).
fn sampled_softmax_operations(be: &dyn Backend) {
    let (rows, v, pre) = (7, 50, 6);
    let columns: Vec<u32> = vec![1, 4, 9, 10, 17, 23, 31, 44, 49];
    let n = columns.len();
    let shared: Vec<f32> = (0..n).map(|j| if j % 3 == 1 { 0.0 } else { 1.0 }).collect();
    let targets: Vec<u32> = vec![1, 4, 0, 7, 3, 4, 8];
    let log_q: Vec<f32> = random(31, n, 1.0).iter().map(|x| -2.0 - x.abs()).collect();
    let (w0, logits0, bias0) = (random(32, pre * v, 1.0), random(33, rows * n, 8.0), random(34, n, 1.0));
    let w = tensor(be, &w0);
    let idx = indices(be, &columns);
    // Columns of a pre × v matrix (strided), and rows of it seen as v × pre (contiguous): exactly the source's values.
    let ws = tensor(be, &poison(pre * n));
    be.gather(&w, &idx, pre, (1, v), &ws).expect("gather columns");
    let wr = tensor(be, &poison(pre * n));
    be.gather(&w, &idx, pre, (pre, 1), &wr).expect("gather rows");
    let (mut want_ws, mut want_wr) = (poison(pre * n), poison(pre * n));
    cpu::gather(&w0, &columns, pre, (1, v), &mut want_ws);
    cpu::gather(&w0, &columns, pre, (pre, 1), &mut want_wr);
    assert_eq!(read(be, &ws), want_ws, "gathered columns");
    assert_eq!(read(be, &wr), want_wr, "gathered rows");
    for (j, &c) in columns.iter().enumerate() {
        assert_eq!(want_ws[j * pre], w0[c as usize], "column {c}");
        assert_eq!(want_wr[j * pre], w0[c as usize * pre], "row {c}");
    }
    // Rows of padding: NO_ROW gives zeros, the rows around it are the source's.
    let holes: Vec<u32> = vec![3, NO_ROW, 0, NO_ROW, 49];
    let wh = tensor(be, &poison(pre * holes.len()));
    be.gather(&w, &indices(be, &holes), pre, (pre, 1), &wh).expect("gather with holes");
    let got = read(be, &wh);
    for (j, &c) in holes.iter().enumerate() {
        let want: Vec<f32> =
            if c == NO_ROW { vec![0.0; pre] } else { w0[c as usize * pre..(c as usize + 1) * pre].to_vec() };
        assert_eq!(got[j * pre..(j + 1) * pre], want[..], "gathered row {j} ({c})");
    }
    // The loss and gradient.
    let (logits, bias, lq, sh) = (tensor(be, &logits0), tensor(be, &bias0), tensor(be, &log_q), tensor(be, &shared));
    let t = indices(be, &targets);
    let (losses, bias_grad) = (tensor(be, &poison(rows)), tensor(be, &poison(n)));
    let c = SampledColumns { count: n, bias: &bias, log_q: &lq, shared: &sh, targets: &t };
    be.sampled_softmax_xent(&logits, rows, &c, &losses, &bias_grad).expect("sampled softmax");
    let (mut want, mut want_losses, mut want_bias) = (logits0.clone(), poison(rows), poison(n));
    cpu::sampled_softmax_xent(&mut want, rows, n, &bias0, &log_q, &shared, &targets, &mut want_losses, &mut want_bias);
    assert_close(&read(be, &logits), &want, "sampled gradient");
    assert_close(&read(be, &losses), &want_losses, "sampled losses");
    assert_close(&read(be, &bias_grad), &want_bias, "bias gradient");
    let grad = read(be, &logits);
    for r in 0..rows {
        let row = &grad[r * n..(r + 1) * n];
        for j in 0..n {
            if shared[j] == 0.0 && j != targets[r] as usize {
                assert_eq!(row[j], 0.0, "row {r} column {j}: inactive, exactly 0");
            }
        }
        assert!(row.iter().map(|&x| f64::from(x)).sum::<f64>().abs() < 1e-6, "row {r} sums to 0");
    }
    lazy_adam(be, &w0, &columns);
}

/// Lazy Adam, three steps: the columns of a pre × v matrix (compact gradient), then rows 3, 8, 20 of a 25×4 table
/// with a full-size gradient; the selected entries move as the CPU twin's, nothing else does.
fn lazy_adam(be: &dyn Backend, w0: &[f32], columns: &[u32]) {
    let (pre, n) = (6, columns.len());
    let v = w0.len() / pre;
    let (t0, g0, tg0) = (random(36, 100, 1.0), random(35, pre * n, 1.0), random(37, 100, 1.0));
    let (w, table) = (tensor(be, w0), tensor(be, &t0));
    let (m, vv) = (tensor(be, &vec![0.0; pre * v]), tensor(be, &vec![0.0; pre * v]));
    let (tm, tv) = (tensor(be, &[0.0; 100]), tensor(be, &[0.0; 100]));
    let (g, tg) = (tensor(be, &g0), tensor(be, &tg0));
    let (idx, rows_idx) = (indices(be, columns), indices(be, &[3, 8, 20]));
    let (mut cw, mut cm, mut cv) = (w0.to_vec(), vec![0.0; pre * v], vec![0.0; pre * v]);
    let (mut ct, mut ctm, mut ctv) = (t0.clone(), vec![0.0; 100], vec![0.0; 100]);
    for step in 1..=3 {
        let s = AdamStep { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, t: step };
        let cols = Selected { idx: &idx, width: pre, param_stride: (1, v), grad_stride: (1, n), grad_by_index: false };
        be.adam_selected(&w, &g, &m, &vv, &cols, s).expect("adam columns");
        cpu::adam_selected(&mut cw, &g0, &mut cm, &mut cv, columns, pre, (1, v), (1, n), false, s);
        let rs = Selected { idx: &rows_idx, width: 4, param_stride: (4, 1), grad_stride: (4, 1), grad_by_index: true };
        be.adam_selected(&table, &tg, &tm, &tv, &rs, s).expect("adam rows");
        cpu::adam_selected(&mut ct, &tg0, &mut ctm, &mut ctv, &[3, 8, 20], 4, (4, 1), (4, 1), true, s);
    }
    let (got_w, got_t) = (read(be, &w), read(be, &table));
    assert_close(&got_w, &cw, "lazy Adam columns");
    assert_close(&got_t, &ct, "lazy Adam rows");
    for (i, (&a, &b)) in got_w.iter().zip(w0).enumerate() {
        assert_eq!(a != b, columns.contains(&((i % v) as u32)), "w[{i}]");
    }
    for (i, (&a, &b)) in got_t.iter().zip(&t0).enumerate() {
        assert_eq!(a != b, [3, 8, 20].contains(&(i / 4)), "table[{i}]");
    }
}
