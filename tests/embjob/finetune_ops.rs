//! The encoder's backward operations (`EncoderGradOps`), on every backend: each against its CPU twin with poisoned
//! outputs (`<check>::cpu`, `<check>::gpu`), and each gradient against central finite differences of its forward
//! operation on the same backend: for a random cotangent r and direction v, `Σ dx·v` equals
//! `(L(x + εv) − L(x − εv)) / 2ε` with `L = Σ r·f(x)` (f64 sums of the f32 results; ε = 1e-2; 2 % relative).

use embjob::backend::cpu::encoder_grad as twin;
use embjob::backend::{
    Activation, AdamWStep, AttentionShape, Backend, Dropout, EmbeddingTables, Indices, LayerNorm, PoolMode, SeqShape,
    Tensor, TokenRows,
};

use crate::backend_ops::{assert_close, poison, random};
use crate::support::on_each_backend;

on_each_backend!(
    gradient_operations_equal_their_cpu_twins,
    layernorm_gradients_equal_finite_differences,
    activation_gradients_equal_finite_differences,
    attention_gradient_equals_finite_differences,
    attention_backward_in_tiles_and_blocks_equals_its_cpu_twin,
    pooling_and_normalisation_gradients_equal_finite_differences,
);

fn tensor(be: &dyn Backend, v: &[f32]) -> Tensor {
    be.tensor(v).expect("tensor")
}

fn indices(be: &dyn Backend, v: &[u32]) -> Indices {
    let mut t = be.index_buffer(v.len().max(1)).expect("index buffer");
    be.write_indices(&mut t, v).expect("indices");
    t
}

fn read(be: &dyn Backend, t: &Tensor, len: usize) -> Vec<f32> {
    let mut v = be.read(t).expect("read");
    v.truncate(len);
    v
}

/// Checks a gradient against central differences: `forward(x)` is the operation's output, `grad(x, r)` the
/// gradient of `Σ r·forward(x)` with respect to x.
fn check_fd(
    what: &str,
    x: &[f32],
    out_len: usize,
    forward: impl Fn(&[f32]) -> Vec<f32>,
    grad: impl Fn(&[f32], &[f32]) -> Vec<f32>,
) {
    let r = random(901, out_len, 1.0);
    for seed in [902u64, 903] {
        let v = random(seed, x.len(), 1.0);
        let eps = 1e-2f32;
        let loss = |sign: f32| -> f64 {
            let xs: Vec<f32> = x.iter().zip(&v).map(|(a, d)| a + sign * eps * d).collect();
            forward(&xs).iter().zip(&r).map(|(o, r)| f64::from(*o) * f64::from(*r)).sum()
        };
        let fd = (loss(1.0) - loss(-1.0)) / (2.0 * f64::from(eps));
        let g = grad(x, &r);
        assert_eq!(g.len(), x.len(), "{what}: gradient length");
        let an: f64 = g.iter().zip(&v).map(|(g, v)| f64::from(*g) * f64::from(*v)).sum();
        assert!(an.is_finite(), "{what}: gradient not finite");
        assert!(
            (fd - an).abs() <= 2e-2 * fd.abs().max(an.abs()) + 1e-3,
            "{what}: analytic directional derivative {an:.6} vs finite differences {fd:.6}"
        );
    }
}

fn gradient_operations_equal_their_cpu_twins(be: &dyn Backend) {
    // Three sequences padded to 7 tokens (lengths 7, 4, 1), 2 heads of 3, width 6.
    let (batch, seq, heads, head_dim) = (3usize, 7usize, 2usize, 3usize);
    let (cols, rows) = (heads * head_dim, batch * seq);
    let lens = [7u32, 4, 1];
    let glens = indices(be, &lens);
    let (gamma, beta) = (random(1, cols, 1.0), random(2, cols, 0.5));
    let (gg, gb) = (tensor(be, &gamma), tensor(be, &beta));
    let ln = LayerNorm { gamma: &gg, beta: &gb, eps: 1e-5 };

    // The embeddings' sum (RoBERTa's position offset of 2).
    let (vocab, types) = (11usize, 2usize);
    let ids: Vec<u32> = (0..rows).map(|r| (r * 7 % vocab) as u32).collect();
    let type_ids: Vec<u32> = (0..rows).map(|r| (r % types) as u32).collect();
    let (word, pos, ty) =
        (random(3, vocab * cols, 1.0), random(4, (seq + 2) * cols, 1.0), random(5, types * cols, 1.0));
    let mut want = poison(rows * cols);
    twin::embed_sum((&word, &pos, &ty), &ids, &type_ids, (seq, 2), cols, &mut want);
    let out = tensor(be, &poison(rows * cols));
    let (gw, gp, gt) = (tensor(be, &word), tensor(be, &pos), tensor(be, &ty));
    let tables = EmbeddingTables { word: &gw, position: &gp, token_type: &gt, ln, cols, position_offset: 2 };
    let (gi, gty) = (indices(be, &ids), indices(be, &type_ids));
    be.embed_sum(&tables, &TokenRows { ids: &gi, type_ids: &gty, seq }, &out).expect("embed_sum");
    assert_close(&read(be, &out, rows * cols), &want, "embed_sum");

    // LayerNorm keeping its input, with and without a residual, and its backward.
    let (x, res, dy) = (random(6, rows * cols, 2.0), random(7, rows * cols, 1.0), random(8, rows * cols, 1.0));
    for with_res in [false, true] {
        let (mut pre, mut want) = (x.clone(), poison(rows * cols));
        twin::layernorm_keep(&mut pre, with_res.then_some(&res[..]), cols, (&gamma, &beta, 1e-5), &mut want);
        let (gpre, gout, gres) = (tensor(be, &x), tensor(be, &poison(rows * cols)), tensor(be, &res));
        be.layernorm_keep(&gpre, with_res.then_some(&gres), rows, &ln, &gout).expect("layernorm_keep");
        assert_close(&read(be, &gout, rows * cols), &want, "layernorm_keep output");
        assert_close(&read(be, &gpre, rows * cols), &pre, "layernorm_keep sum");
    }
    let (mut dx, mut dyx) = (poison(rows * cols), poison(rows * cols));
    twin::layernorm_backward(&x, &dy, cols, (&gamma, 1e-5), &mut dx, &mut dyx);
    let (gdx, gdyx) = (tensor(be, &poison(rows * cols)), tensor(be, &poison(rows * cols)));
    be.layernorm_backward(&tensor(be, &x), &tensor(be, &dy), rows, &ln, &gdx, &gdyx).expect("ln backward");
    assert_close(&read(be, &gdx, rows * cols), &dx, "layernorm_backward dx");
    assert_close(&read(be, &gdyx, rows * cols), &dyx, "layernorm_backward dy·x̂");

    // Activations and their backward.
    for act in [Activation::Gelu, Activation::GeluTanh, Activation::Relu] {
        let mut want = poison(x.len());
        twin::activation(&x, &mut want, act);
        let out = tensor(be, &poison(x.len()));
        be.activation(&tensor(be, &x), &out, x.len(), act).expect("activation");
        assert_close(&read(be, &out, x.len()), &want, &format!("activation {act:?}"));
        let mut want = dy.clone();
        twin::activation_backward(&x, &mut want, act);
        let g = tensor(be, &dy);
        be.activation_backward(&tensor(be, &x), &g, x.len(), act).expect("activation_backward");
        assert_close(&read(be, &g, x.len()), &want, &format!("activation_backward {act:?}"));
    }

    attention_backward_equals_its_twin(be, (batch, seq, heads, head_dim), &lens);

    // Dropout (and its backward, the same product): the twin's mask on every backend, 1 − p of the values kept.
    let x = random(12, 4099, 1.0);
    let d = Dropout::new(0.25, 9, 3, 1).expect("mask");
    let mut want = x.clone();
    embjob::backend::dropout::apply(&mut want, 0, &d);
    let g = tensor(be, &x);
    be.dropout(&g, x.len(), d).expect("dropout");
    assert_close(&read(be, &g, x.len()), &want, "dropout");
    let kept = want.iter().filter(|&&v| v != 0.0).count() as f64 / x.len() as f64;
    assert!((kept - 0.75).abs() < 0.03, "kept {kept}");

    // Pooling's and normalisation's backward.
    let d_pooled = random(11, batch * cols, 1.0);
    for mode in [PoolMode::Mean, PoolMode::Cls] {
        let mut want = poison(rows * cols);
        twin::pool_backward(&d_pooled, &lens, (seq, cols), mode, &mut want);
        let out = tensor(be, &poison(rows * cols));
        let s = SeqShape { batch, seq, cols };
        be.pool_backward(&tensor(be, &d_pooled), &glens, s, mode, &out).expect("pool_backward");
        assert_close(&read(be, &out, rows * cols), &want, &format!("pool_backward {mode:?}"));
    }
    assert!(be
        .pool_backward(
            &tensor(be, &d_pooled),
            &glens,
            SeqShape { batch, seq, cols },
            PoolMode::Max,
            &tensor(be, &poison(rows * cols))
        )
        .is_err());
    let mut want = poison(rows * cols);
    twin::l2_normalize_backward(&x, &dy, cols, &mut want);
    let out = tensor(be, &poison(rows * cols));
    be.l2_normalize_backward(&tensor(be, &x), &tensor(be, &dy), rows, cols, &out).expect("l2 backward");
    assert_close(&read(be, &out, rows * cols), &want, "l2_normalize_backward");

    // Scaling, the sum of squares (over several of the GPU's blocks) and AdamW with clipping and decay.
    let big = random(12, 10_000, 1.0);
    let g = tensor(be, &big);
    be.scale(&g, 9_999, 0.5).expect("scale");
    let mut want = big.clone();
    twin::scale(&mut want[..9_999], 0.5);
    assert_close(&read(be, &g, 10_000), &want, "scale");
    let (got, exact) = (be.sum_squares(&tensor(be, &big), 9_999).expect("sum"), twin::sum_squares(&big[..9_999]));
    assert!((got - exact).abs() <= 1e-5 * exact, "sum_squares {got} vs {exact}");
    // Past the CPU's parallel threshold (chunks summed apart, then in order): the plain sum, and reruns bit-equal.
    let long = random(17, 300_007, 1.0);
    let plain: f64 = long.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let t = tensor(be, &long);
    let got = be.sum_squares(&t, long.len()).expect("sum");
    assert!((got - plain).abs() <= 1e-5 * plain, "sum_squares of {} values: {got} vs {plain}", long.len());
    assert_eq!(got.to_bits(), be.sum_squares(&t, long.len()).expect("sum").to_bits(), "rerun");
    let (p, gr, m, v) = (random(13, 1000, 1.0), random(14, 1000, 0.1), random(15, 1000, 0.01), random(16, 1000, 0.01));
    let v: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    for (t, wd) in [(1u32, 0.01f32), (7, 0.0)] {
        let s = AdamWStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: wd, t, grad_scale: 0.7 };
        let (mut wp, mut wm, mut wv) = (p.clone(), m.clone(), v.clone());
        twin::adamw(&mut wp, &gr, &mut wm, &mut wv, s);
        let (gp, gm, gv) = (tensor(be, &p), tensor(be, &m), tensor(be, &v));
        be.adamw(&gp, &tensor(be, &gr), &gm, &gv, s).expect("adamw");
        assert_close(&read(be, &gp, 1000), &wp, "adamw parameter");
        assert_close(&read(be, &gm, 1000), &wm, "adamw first moment");
        assert_close(&read(be, &gv, 1000), &wv, "adamw second moment");
    }
}

fn layernorm_gradients_equal_finite_differences(be: &dyn Backend) {
    let (rows, cols) = (3usize, 5usize);
    let (x, gamma, beta) = (random(21, rows * cols, 1.0), random(22, cols, 1.0), random(23, cols, 0.5));
    let n = rows * cols;
    let ln_out = |x: &[f32], gamma: &[f32]| {
        let (gg, gb) = (tensor(be, gamma), tensor(be, &beta));
        let (pre, out) = (tensor(be, x), tensor(be, &poison(n)));
        be.layernorm_keep(&pre, None, rows, &LayerNorm { gamma: &gg, beta: &gb, eps: 1e-5 }, &out).expect("ln");
        read(be, &out, n)
    };
    let ln_grads = |x: &[f32], r: &[f32]| {
        let (gg, gb) = (tensor(be, &gamma), tensor(be, &beta));
        let (dx, dyx) = (tensor(be, &poison(n)), tensor(be, &poison(n)));
        let ln = LayerNorm { gamma: &gg, beta: &gb, eps: 1e-5 };
        be.layernorm_backward(&tensor(be, x), &tensor(be, r), rows, &ln, &dx, &dyx).expect("ln backward");
        (read(be, &dx, n), read(be, &dyx, n))
    };
    check_fd("layernorm dx", &x, n, |x| ln_out(x, &gamma), |x, r| ln_grads(x, r).0);
    // γ's gradient: the column sums of dy·x̂.
    check_fd(
        "layernorm dγ",
        &gamma,
        n,
        |g| ln_out(&x, g),
        |_, r| {
            let dyx = ln_grads(&x, r).1;
            (0..cols).map(|c| (0..rows).map(|i| dyx[i * cols + c]).sum()).collect()
        },
    );
}

fn activation_gradients_equal_finite_differences(be: &dyn Backend) {
    let x = random(31, 40, 1.5);
    for act in [Activation::Gelu, Activation::GeluTanh] {
        let forward = |x: &[f32]| {
            let out = tensor(be, &poison(x.len()));
            be.activation(&tensor(be, x), &out, x.len(), act).expect("activation");
            read(be, &out, x.len())
        };
        let grad = |x: &[f32], r: &[f32]| {
            let g = tensor(be, r);
            be.activation_backward(&tensor(be, x), &g, x.len(), act).expect("backward");
            read(be, &g, x.len())
        };
        check_fd(&format!("{act:?}"), &x, x.len(), forward, grad);
    }
}

fn attention_gradient_equals_finite_differences(be: &dyn Backend) {
    // Two sequences padded to 5 tokens (lengths 5 and 3), 2 heads of 3.
    let (batch, seq, heads, head_dim) = (2usize, 5usize, 2usize, 3usize);
    let (cols, rows) = (heads * head_dim, batch * seq);
    let lens = indices(be, &[5, 3]);
    let qkv = random(41, rows * 3 * cols, 1.0);
    // With dropout the mask is a function of the step's key, so the same forward pass is differentiated.
    for dropout in [None, Dropout::new(0.3, 5, 2, 7)] {
        let scale = 1.0 / (head_dim as f32).sqrt();
        let shape = AttentionShape { batch, seq, heads, head_dim, scale, dropout };
        let forward = |x: &[f32]| {
            let out = tensor(be, &poison(rows * cols));
            be.attention(&tensor(be, x), &lens, shape, &out).expect("attention");
            read(be, &out, rows * cols)
        };
        let grad = |x: &[f32], r: &[f32]| {
            let (d, st) = (tensor(be, &poison(rows * 3 * cols)), tensor(be, &poison(rows * heads * 2)));
            be.attention_backward(&tensor(be, x), &lens, shape, &tensor(be, r), &d, &st).expect("backward");
            read(be, &d, rows * 3 * cols)
        };
        check_fd(&format!("attention, dropout {dropout:?}"), &qkv, rows * cols, forward, grad);
    }
}

fn pooling_and_normalisation_gradients_equal_finite_differences(be: &dyn Backend) {
    let (batch, seq, cols) = (2usize, 4usize, 3usize);
    let lens = indices(be, &[4, 2]);
    let s = SeqShape { batch, seq, cols };
    let hidden = random(51, batch * seq * cols, 1.0);
    for mode in [PoolMode::Mean, PoolMode::Cls] {
        let forward = |x: &[f32]| {
            let out = tensor(be, &poison(batch * cols));
            be.pool(&tensor(be, x), &lens, s, mode, &out).expect("pool");
            read(be, &out, batch * cols)
        };
        let grad = |_: &[f32], r: &[f32]| {
            let out = tensor(be, &poison(batch * seq * cols));
            be.pool_backward(&tensor(be, r), &lens, s, mode, &out).expect("pool backward");
            read(be, &out, batch * seq * cols)
        };
        check_fd(&format!("pool {mode:?}"), &hidden, batch * cols, forward, grad);
    }
    let x = random(52, 4 * 6, 1.0);
    let forward = |x: &[f32]| {
        let t = tensor(be, x);
        be.l2_normalize(&t, 4, 6).expect("normalize");
        read(be, &t, x.len())
    };
    let grad = |x: &[f32], r: &[f32]| {
        let out = tensor(be, &poison(x.len()));
        be.l2_normalize_backward(&tensor(be, x), &tensor(be, r), 4, 6, &out).expect("backward");
        read(be, &out, x.len())
    };
    check_fd("l2_normalize", &x, x.len(), forward, grad);
}

/// Attention's backward: d_qkv and the statistics of the queries' pass, without and with the probabilities'
/// dropout (the same mask on both backends), on poisoned outputs.
fn attention_backward_equals_its_twin(
    be: &dyn Backend,
    (batch, seq, heads, head_dim): (usize, usize, usize, usize),
    lens: &[u32],
) {
    let (cols, rows) = (heads * head_dim, batch * seq);
    let qkv = random(9, rows * 3 * cols, 1.5);
    let d_out = random(10, rows * cols, 1.0);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let glens = indices(be, lens);
    for dropout in [None, Dropout::new(0.3, 3, 1, 4)] {
        let (mut dq, mut st) = (poison(rows * 3 * cols), poison(rows * heads * 2));
        let dims = twin::AttnDims { batch, seq, heads, head_dim, scale, dropout };
        twin::attention_backward(&qkv, lens, dims, &d_out, &mut dq, &mut st);
        let (gdq, gst) = (tensor(be, &poison(rows * 3 * cols)), tensor(be, &poison(rows * heads * 2)));
        let shape = AttentionShape { batch, seq, heads, head_dim, scale, dropout };
        be.attention_backward(&tensor(be, &qkv), &glens, shape, &tensor(be, &d_out), &gdq, &gst)
            .expect("attention_backward");
        let what = format!("attention_backward, {seq} tokens, heads of {head_dim}, dropout {dropout:?}");
        assert_close(&read(be, &gdq, rows * 3 * cols), &dq, &what);
        assert_close(&read(be, &gst, rows * heads * 2), &st, &format!("{what}: statistics"));
    }
}

/// The GPU kernels stream keys and queries through workgroup memory in tiles (32 rows at heads of 64) and take
/// 64 rows per workgroup: sequences longer than both (two blocks, three tiles), a short one, an empty one.
fn attention_backward_in_tiles_and_blocks_equals_its_cpu_twin(be: &dyn Backend) {
    attention_backward_equals_its_twin(be, (3, 70, 2, 64), &[70, 66, 0]);
}
