//! The model kernels of the CPU backend on plain slices: the reference each GPU kernel is tested against.
//! Row-parallel with rayon where rows are independent; every sum runs in a fixed order.

use rayon::prelude::*;

use super::{AdamStep, MatDims};

/// `c = op(a)·op(b) + beta·c`, row-major, through matrixmultiply's sgemm.
pub fn matmul(a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32], d: MatDims, beta: f32) {
    let MatDims { m, n, k } = d;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.iter_mut().for_each(|x| *x *= beta);
        return;
    }
    // op(a) is m×k: stored k×m when transposed. op(b) is k×n: stored n×k when transposed.
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: buffers smaller than {m}×{n}×{k}");
    // SAFETY: the asserts above guarantee that the strided m×k, k×n and m×n views stay inside the slices.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// Gather-and-pool over bags.
pub fn embedding_bag(table: &[f32], dim: usize, items: &[u32], offsets: &[u32], mean: bool, out: &mut [f32]) {
    out.par_chunks_mut(dim.max(1)).enumerate().for_each(|(r, row)| {
        row.iter_mut().for_each(|x| *x = 0.0);
        let (lo, hi) = (offsets[r] as usize, offsets[r + 1] as usize);
        for &it in &items[lo..hi] {
            let src = &table[it as usize * dim..(it as usize + 1) * dim];
            for (o, &s) in row.iter_mut().zip(src) {
                *o += s;
            }
        }
        if mean && hi > lo {
            let inv = 1.0 / (hi - lo) as f32;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    });
}

/// Segment sum of the pooled gradient into the embedding gradient (zeroed first).
#[allow(clippy::too_many_arguments)]
pub fn embedding_bag_backward(
    d_pooled: &[f32],
    dim: usize,
    offsets: &[u32],
    seg_items: &[u32],
    seg_offsets: &[u32],
    seg_examples: &[u32],
    mean: bool,
    grad: &mut [f32],
) {
    grad.iter_mut().for_each(|x| *x = 0.0);
    for (s, &item) in seg_items.iter().enumerate() {
        let dst = &mut grad[item as usize * dim..(item as usize + 1) * dim];
        for &e in &seg_examples[seg_offsets[s] as usize..seg_offsets[s + 1] as usize] {
            let e = e as usize;
            let scale = if mean { 1.0 / (offsets[e + 1] - offsets[e]) as f32 } else { 1.0 };
            for (g, &x) in dst.iter_mut().zip(&d_pooled[e * dim..(e + 1) * dim]) {
                *g += x * scale;
            }
        }
    }
}

/// `x = act(x + bias)` row by row.
pub fn bias_act(x: &mut [f32], bias: &[f32], cols: usize, relu: bool) {
    x.par_chunks_mut(cols.max(1)).for_each(|row| {
        for (v, &b) in row.iter_mut().zip(bias) {
            let y = *v + b;
            *v = if relu && y < 0.0 { 0.0 } else { y };
        }
    });
}

/// `grad *= (act > 0)`.
pub fn relu_backward(grad: &mut [f32], act: &[f32]) {
    for (g, &a) in grad.iter_mut().zip(act) {
        if a <= 0.0 {
            *g = 0.0;
        }
    }
}

/// Column sums, rows in order.
pub fn column_sums(x: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for r in 0..rows {
        for (o, &v) in out.iter_mut().zip(&x[r * cols..(r + 1) * cols]) {
            *o += v;
        }
    }
}

/// Fused softmax cross-entropy: logits become the gradient of the mean loss; `losses[r]` the row's loss.
pub fn softmax_xent(logits: &mut [f32], targets: &[u32], cols: usize, losses: &mut [f32]) {
    let rows = losses.len();
    let inv_rows = 1.0 / rows as f32;
    logits.par_chunks_mut(cols).zip(losses.par_iter_mut()).enumerate().for_each(|(r, (row, loss))| {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0.0f32;
        for v in row.iter_mut() {
            let e = (*v - max).exp();
            *v = e;
            sum += e;
        }
        let t = targets[r] as usize;
        let p_target = row[t] / sum;
        *loss = -(p_target.max(f32::MIN_POSITIVE)).ln();
        let scale = inv_rows / sum;
        for v in row.iter_mut() {
            *v *= scale;
        }
        row[t] -= inv_rows;
    });
}

/// One Adam step over a flat parameter.
pub fn adam(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], s: AdamStep) {
    let bc1 = 1.0 - s.beta1.powi(s.t as i32);
    let bc2 = 1.0 - s.beta2.powi(s.t as i32);
    let step = s.lr / bc1;
    let bc2_sqrt = bc2.sqrt();
    param
        .par_chunks_mut(4096)
        .zip(grad.par_chunks(4096))
        .zip(m.par_chunks_mut(4096))
        .zip(v.par_chunks_mut(4096))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                let gi = g[i] + s.weight_decay * p[i];
                m[i] = s.beta1 * m[i] + (1.0 - s.beta1) * gi;
                v[i] = s.beta2 * v[i] + (1.0 - s.beta2) * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + s.eps;
                p[i] -= step * m[i] / denom;
            }
        });
}

/// One SGD step with momentum.
pub fn sgd(param: &mut [f32], grad: &[f32], velocity: &mut [f32], lr: f32, momentum: f32, weight_decay: f32) {
    for i in 0..param.len() {
        let g = grad[i] + weight_decay * param[i];
        velocity[i] = momentum * velocity[i] + g;
        param[i] -= lr * velocity[i];
    }
}

/// Target ranks with masks.
pub fn target_ranks(
    scores: &[f32],
    cols: usize,
    targets: &[u32],
    mask_items: &[u32],
    mask_offsets: &[u32],
    ranks: &mut [f32],
) {
    ranks.par_iter_mut().enumerate().for_each(|(r, out)| {
        let row = &scores[r * cols..(r + 1) * cols];
        let t = targets[r] as usize;
        let st = row[t];
        let mut higher = row.iter().filter(|&&s| s > st).count();
        for &mi in &mask_items[mask_offsets[r] as usize..mask_offsets[r + 1] as usize] {
            if mi as usize != t && row[mi as usize] > st {
                higher -= 1;
            }
        }
        *out = (higher + 1) as f32;
    });
}

/// Cosine top-k of every row, itself excluded; ties to the smaller index.
pub fn cosine_top_k(x: &[f32], n: usize, dim: usize, k: usize) -> (Vec<u32>, Vec<f32>) {
    let k = k.min(n.saturating_sub(1));
    let mut unit = x.to_vec();
    for row in unit.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    let mut idx = vec![0u32; n * k];
    let mut sim = vec![0f32; n * k];
    const BLOCK: usize = 256;
    for start in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - start);
        let mut s = vec![0f32; rows * n];
        matmul(&unit[start * dim..], false, &unit, true, &mut s, MatDims { m: rows, n, k: dim }, 0.0);
        idx[start * k..(start + rows) * k]
            .par_chunks_mut(k.max(1))
            .zip(sim[start * k..(start + rows) * k].par_chunks_mut(k.max(1)))
            .enumerate()
            .for_each(|(r, (oi, os))| {
                let me = start + r;
                let row = &s[r * n..(r + 1) * n];
                let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
                for (j, &v) in row.iter().enumerate() {
                    if j == me {
                        continue;
                    }
                    if best.len() == k && !(v > best[k - 1].0) {
                        continue;
                    }
                    let at = best.partition_point(|&(bv, bj)| bv > v || (bv == v && bj < j as u32));
                    best.insert(at, (v, j as u32));
                    best.truncate(k);
                }
                for (i, (v, j)) in best.into_iter().enumerate() {
                    oi[i] = j;
                    os[i] = v;
                }
            });
    }
    (idx, sim)
}
