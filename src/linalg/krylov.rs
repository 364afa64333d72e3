//! The largest eigenpairs of a symmetric positive semi-definite operator by thick-restart block Lanczos (what
//! ARPACK's implicitly restarted Lanczos does, a block at a time: every product with the operator is a sparse
//! product with `b` columns instead of one, which the CPU runs several times faster per column).
//!
//! The basis is kept orthonormal by full re-orthogonalization (classical Gram–Schmidt, twice), and the projected
//! matrix `T = QᵀAQ` is built from those same projections, so the method needs no tridiagonal bookkeeping and a
//! restart is just "keep the best Ritz vectors". A Ritz pair's residual `‖Au − θu‖` is read off the small matrices;
//! the fit stops when the `k` wanted ones are below `tol · θ₁`. Dense work is faer's: the small matrices on one
//! thread, the tall basis products in fixed chunks of rows on every core, summed in chunk order (the result does
//! not depend on the thread count).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::rng::SplitMix;

/// How the solver runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LanczosParams {
    /// Eigenpairs wanted.
    pub k: usize,
    /// Columns per product.
    pub block: usize,
    /// Basis columns before a restart.
    pub max_basis: usize,
    /// Residual bound relative to the largest Ritz value.
    pub tol: f64,
    /// Products with the operator before the solver gives up.
    pub max_products: usize,
}

impl LanczosParams {
    /// The defaults for `k` eigenpairs: blocks of k + 2 rounded up to a multiple of 4, a basis of about six blocks,
    /// residuals below 1e-8 of the largest eigenvalue (its eigenvalues are then exact to about 1e-16 relative;
    /// components to 1e-8 over the gap). Blocks of 16 and 24 (k 10 and 16) took 5–25 % longer on `bench pca`'s
    /// shapes, blocks of 32 up to twice as long.
    pub fn for_k(k: usize) -> LanczosParams {
        let block = (k + 2).next_multiple_of(4);
        LanczosParams { k, block, max_basis: k + 5 * block, tol: 1e-8, max_products: 400 }
    }
}

/// The result: eigenvalues descending and their eigenvectors as columns.
#[derive(Debug, Clone)]
pub struct Eigenpairs {
    pub values: Vec<f64>,
    /// m × k.
    pub vectors: Mat<f64>,
    /// Block products with the operator.
    pub products: usize,
    pub restarts: usize,
    /// The largest relative residual of the returned pairs.
    pub residual: f64,
}

fn mm(dst: MatMut<'_, f64>, accum: Accum, a: MatRef<'_, f64>, b: MatRef<'_, f64>, alpha: f64) {
    matmul(dst, accum, a, b, alpha, Par::Seq);
}

/// Rows per chunk of the tall products (basis × block): the chunks run in parallel and their partial sums are
/// added in chunk order, so the result depends on the shape only, not on the threads. 1,024 rows of a basis of
/// up to about 200 columns stay in a core's 2 MB L2 while a chunk is used twice (see `project_out`).
const ROW_CHUNK: usize = 1024;

fn row_chunks(m: usize) -> Vec<(usize, usize)> {
    (0..m).step_by(ROW_CHUNK).map(|r0| (r0, ROW_CHUNK.min(m - r0))).collect()
}

/// `w`'s rows cut as `row_chunks` cuts them, as disjoint views with their first row.
fn chunks_mut(w: MatMut<'_, f64>) -> Vec<(usize, MatMut<'_, f64>)> {
    let mut pieces = Vec::new();
    let mut rest = w;
    for (r0, len) in row_chunks(rest.nrows()) {
        let (piece, tail) = rest.split_at_row_mut(len);
        pieces.push((r0, piece));
        rest = tail;
    }
    pieces
}

/// The partial results of the chunks, added in chunk order.
fn sum_in_order(parts: Vec<Mat<f64>>, rows: usize, cols: usize) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(rows, cols);
    for part in &parts {
        out += part;
    }
    out
}

/// `qᵀw` (q and w tall).
fn t_mul(q: MatRef<'_, f64>, w: MatRef<'_, f64>) -> Mat<f64> {
    let parts: Vec<Mat<f64>> = row_chunks(q.nrows())
        .into_par_iter()
        .map(|(r0, len)| {
            let mut c = Mat::<f64>::zeros(q.ncols(), w.ncols());
            mm(c.as_mut(), Accum::Replace, q.subrows(r0, len).transpose(), w.subrows(r0, len), 1.0);
            c
        })
        .collect();
    sum_in_order(parts, q.ncols(), w.ncols())
}

/// `dst = alpha·q·h + (dst if accumulating)`, by row chunks (q tall, h small).
fn mul_rows(dst: MatMut<'_, f64>, accum: Accum, q: MatRef<'_, f64>, h: MatRef<'_, f64>, alpha: f64) {
    chunks_mut(dst).into_par_iter().for_each(|(r0, piece)| {
        let len = piece.nrows();
        mm(piece, accum, q.subrows(r0, len), h, alpha);
    });
}

/// `q·h` as a new matrix.
fn times(q: MatRef<'_, f64>, h: MatRef<'_, f64>) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(q.nrows(), h.ncols());
    mul_rows(out.as_mut(), Accum::Replace, q, h, 1.0);
    out
}

/// Orthogonalizes the columns of `w` against `q` twice (CGS2), returning the summed coefficients `qᵀw`. Three
/// sweeps over `q` instead of four: `c₁ = qᵀw`; then, a chunk of rows at a time while it is in cache,
/// `w −= q·c₁` and that chunk's share of `c₂ = qᵀw`; then `w −= q·c₂`.
fn project_out(q: MatRef<'_, f64>, w: &mut Mat<f64>) -> Mat<f64> {
    let (used, b) = (q.ncols(), w.ncols());
    if used == 0 {
        return Mat::<f64>::zeros(0, b);
    }
    let c1 = t_mul(q, w.as_ref());
    let parts: Vec<Mat<f64>> = chunks_mut(w.as_mut())
        .into_par_iter()
        .map(|(r0, mut piece)| {
            let qc = q.subrows(r0, piece.nrows());
            mm(piece.as_mut(), Accum::Add, qc, c1.as_ref(), -1.0);
            let mut c = Mat::<f64>::zeros(used, b);
            mm(c.as_mut(), Accum::Replace, qc.transpose(), piece.as_ref(), 1.0);
            c
        })
        .collect();
    let c2 = sum_in_order(parts, used, b);
    mul_rows(w.as_mut(), Accum::Add, q, c2.as_ref(), -1.0);
    c1 + c2
}

/// Thin QR `w = Q R` of a tall block (consumed). Where `w` is well conditioned (κ below 1e6, read off the
/// eigenvalues of `wᵀw`) by Cholesky QR twice, in place: two sweeps of small products over `w` on every core,
/// orthonormal to rounding at that κ. Otherwise (a block that is close to rank deficient, as near convergence) by
/// Householder, stable at any κ. faer's Householder QR on 20,000 × 16 sweeps the block once per column and took
/// 4–5 ms; Cholesky QR2 takes about 1 ms.
fn tall_qr(mut w: Mat<f64>) -> (Mat<f64>, Mat<f64>) {
    let b = w.ncols();
    let householder = |w: Mat<f64>| {
        let qr = w.qr();
        (qr.compute_thin_Q(), qr.thin_R().to_owned())
    };
    if w.nrows() < 4 * b || b == 0 {
        return householder(w);
    }
    let Some((r1, r1_inv)) = cholesky_factor(t_mul(w.as_ref(), w.as_ref()).as_ref(), 1e-12) else {
        return householder(w);
    };
    // In place: w becomes w·R₁⁻¹, and the block is w·R₁ from here on.
    let g2 = scale_rows(&mut w, r1_inv.as_ref(), true);
    let (q, r2) = match g2.and_then(|g2| cholesky_factor(g2.as_ref(), 0.5)) {
        Some((r2, r2_inv)) => {
            scale_rows(&mut w, r2_inv.as_ref(), false);
            (w, r2)
        }
        None => householder(w),
    };
    let mut r = Mat::<f64>::zeros(b, b);
    mm(r.as_mut(), Accum::Replace, r2.as_ref(), r1.as_ref(), 1.0);
    (q, r)
}

/// The upper factor `R` of `G = RᵀR` and its inverse, where the smallest eigenvalue of `G` is at least
/// `min_ratio` times its largest (else `None`).
fn cholesky_factor(g: MatRef<'_, f64>, min_ratio: f64) -> Option<(Mat<f64>, Mat<f64>)> {
    let eig = g.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let s = eig.S().column_vector();
    let (lo, hi) = (0..s.nrows()).fold((f64::INFINITY, 0.0f64), |(lo, hi), i| (lo.min(s[i]), hi.max(s[i])));
    if !(hi > 0.0 && lo >= min_ratio * hi) {
        return None;
    }
    let r = g.llt(faer::Side::Lower).ok()?.L().transpose().to_owned();
    let mut inv = Mat::<f64>::identity(g.nrows(), g.nrows());
    r.as_ref().solve_upper_triangular_in_place(inv.as_mut());
    Some((r, inv))
}

/// `v ← v·h` a chunk of rows at a time; with `gram`, also `vᵀv` of the result (summed in chunk order).
fn scale_rows(v: &mut Mat<f64>, h: MatRef<'_, f64>, gram: bool) -> Option<Mat<f64>> {
    let b = v.ncols();
    let parts: Vec<Option<Mat<f64>>> = chunks_mut(v.as_mut())
        .into_par_iter()
        .map(|(_, mut piece)| {
            let mut scaled = Mat::<f64>::zeros(piece.nrows(), b);
            mm(scaled.as_mut(), Accum::Replace, piece.as_ref(), h, 1.0);
            piece.copy_from(&scaled);
            gram.then(|| {
                let mut g = Mat::<f64>::zeros(b, b);
                mm(g.as_mut(), Accum::Replace, scaled.transpose(), scaled.as_ref(), 1.0);
                g
            })
        })
        .collect();
    gram.then(|| sum_in_order(parts.into_iter().flatten().collect(), b, b))
}

/// `w = V R` with orthonormal `V` (m × b): a QR, and where `w` is (numerically) rank deficient the missing
/// directions are random ones orthogonal to `q` and to the rest of `V`, with zero rows in `R` (the space the
/// operator maps into is exhausted there).
///
/// `before` is the norm of `w` before it was projected. Two projections keep `w` orthogonal to `q` to rounding
/// unless `w` lay (nearly) inside its span; where projecting removed all but 1e-9 of it, the QR's columns carry
/// the projection's rounding errors magnified, so they are projected out of `q` once more (and the QR repeated,
/// with `R` updated to match).
fn orthonormalize(
    q: MatRef<'_, f64>,
    w: Mat<f64>,
    before: f64,
    scale: f64,
    rng: &mut SplitMix,
) -> Result<(Mat<f64>, Mat<f64>)> {
    let b = w.ncols();
    let (mut v, mut r) = tall_qr(w);
    let floor = 1e-12 * scale.max(f64::MIN_POSITIVE);
    let mut smallest = (0..b).map(|i| r[(i, i)].abs()).fold(f64::INFINITY, f64::min);
    if smallest <= floor {
        (v, r, smallest) = rank_revealing(q, v, &r, floor, rng)?;
    }
    if smallest < 1e-9 * before {
        project_out(q, &mut v);
        let (v2, r2) = tall_qr(v);
        v = v2;
        let mut rr = Mat::<f64>::zeros(b, b);
        mm(rr.as_mut(), Accum::Replace, r2.as_ref(), r.as_ref(), 1.0);
        r = rr;
    }
    Ok((v, r))
}

/// `v R` again as `(v U)(S Wᵀ)` from the SVD `R = U S Wᵀ`, with the directions whose singular value is below
/// `floor` replaced by random ones (orthogonal to `q` and the rest) and zero rows in the new R. Also returns the
/// smallest singular value kept.
fn rank_revealing(
    q: MatRef<'_, f64>,
    v: Mat<f64>,
    r: &Mat<f64>,
    floor: f64,
    rng: &mut SplitMix,
) -> Result<(Mat<f64>, Mat<f64>, f64)> {
    let b = v.ncols();
    let svd = r.thin_svd().map_err(|e| Error::Internal(format!("Lanczos: SVD of a {b}×{b} block: {e:?}")))?;
    let vu = {
        let mut out = Mat::<f64>::zeros(v.nrows(), b);
        mm(out.as_mut(), Accum::Replace, v.as_ref(), svd.U(), 1.0);
        out
    };
    let s = svd.S().column_vector();
    let mut r2 = Mat::<f64>::zeros(b, b);
    for i in 0..b {
        if s[i] > floor {
            for j in 0..b {
                r2[(i, j)] = s[i] * svd.V()[(j, i)];
            }
        }
    }
    let mut v = vu;
    let kept = (0..b).map(|i| s[i]).filter(|&x| x > floor).fold(f64::INFINITY, f64::min);
    for i in 0..b {
        if s[i] > floor {
            continue;
        }
        // A random direction, orthogonal to the basis and to V's other columns.
        let mut x = Mat::<f64>::from_fn(v.nrows(), 1, |_, _| rng.normal());
        for _ in 0..2 {
            project_out(q, &mut x);
            // Against the kept directions and those already replaced (not the ones still to replace).
            for j in 0..b {
                if s[j] > floor || j < i {
                    let d: f64 = (0..v.nrows()).map(|t| v[(t, j)] * x[(t, 0)]).sum();
                    for t in 0..v.nrows() {
                        x[(t, 0)] -= d * v[(t, j)];
                    }
                }
            }
        }
        let norm = x.norm_l2();
        if norm <= 0.0 {
            return Err(Error::Internal("Lanczos: no direction left to extend the basis".into()));
        }
        for t in 0..v.nrows() {
            v[(t, i)] = x[(t, 0)] / norm;
        }
    }
    Ok((v, r2, kept))
}

/// Eigenvalues descending and eigenvectors (columns, same order) of the symmetric `t`.
fn eigen_desc(t: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>)> {
    let eig = t
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| Error::Internal(format!("Lanczos: eigendecomposition of T: {e:?}")))?;
    let d = t.nrows();
    let vals = eig.S().column_vector();
    let values: Vec<f64> = (0..d).rev().map(|c| vals[c]).collect();
    let vectors = Mat::from_fn(d, d, |r, c| eig.U()[(r, d - 1 - c)]);
    Ok((values, vectors))
}

/// The `params.k` largest eigenpairs of the m×m operator `apply` (which maps an m × b block to its image).
pub fn largest_eigenpairs(
    m: usize,
    params: &LanczosParams,
    seed: u64,
    mut apply: impl FnMut(MatRef<'_, f64>) -> Result<Mat<f64>>,
) -> Result<Eigenpairs> {
    let k = params.k.min(m);
    // At least k columns per block, so that the basis always holds k Ritz vectors.
    let b = params.block.max(k).clamp(1, m.max(1));
    let mut rng = SplitMix::new(seed ^ 0x4c61_6e63_7a6f_7321);
    // A small operator, or a basis that would span most of it anyway: its whole matrix, exactly.
    if m <= (params.max_basis + b).max(4 * b) {
        return dense_eigenpairs(m, k, b, &mut apply);
    }
    let cap = params.max_basis.max(k + 2 * b).min(m - b);
    let mut basis = Mat::<f64>::zeros(m, cap + b);
    let mut t = Mat::<f64>::zeros(cap + b, cap + b);
    let start = Mat::<f64>::from_fn(m, b, |_, _| 2.0 * rng.next_f64() - 1.0);
    let (v0, _) = orthonormalize(basis.as_ref().subcols(0, 0), start, 1.0, 1.0, &mut rng)?;
    basis.as_mut().subcols_mut(0, b).copy_from(&v0);
    let (mut cur, mut used) = (0usize, b);
    let (mut products, mut restarts) = (0usize, 0usize);
    let mut scale = 0.0f64;
    loop {
        let mut w = apply(basis.as_ref().subcols(cur, b))?;
        products += 1;
        if w.nrows() != m || w.ncols() != b {
            return Err(Error::Internal(format!("Lanczos: the operator returned {}×{}", w.nrows(), w.ncols())));
        }
        let before = w.norm_l2();
        let h = project_out(basis.as_ref().subcols(0, used), &mut w);
        for r in 0..used {
            for c in 0..b {
                let v = if (cur..cur + b).contains(&r) { 0.5 * (h[(r, c)] + h[(c + cur, r - cur)]) } else { h[(r, c)] };
                t[(r, cur + c)] = v;
                t[(cur + c, r)] = v;
            }
        }
        let (theta, y) = eigen_desc(t.as_ref().submatrix(0, 0, used, used))?;
        scale = scale.max(theta[0].abs());
        let (next, r) = orthonormalize(basis.as_ref().subcols(0, used), w, before, scale, &mut rng)?;
        // ‖A u_j − θ_j u_j‖ = ‖R · (the last block's rows of y_j)‖.
        let mut worst = 0.0f64;
        for j in 0..k {
            let mut norm2 = 0.0;
            for i in 0..b {
                let s: f64 = (0..b).map(|l| r[(i, l)] * y[(cur + l, j)]).sum();
                norm2 += s * s;
            }
            worst = worst.max(norm2.sqrt() / scale.max(f64::MIN_POSITIVE));
        }
        if worst <= params.tol || scale == 0.0 {
            let vectors = times(basis.as_ref().subcols(0, used), y.as_ref().subcols(0, k));
            return Ok(Eigenpairs { values: theta[..k].to_vec(), vectors, products, restarts, residual: worst });
        }
        if products >= params.max_products {
            return Err(Error::Internal(format!(
                "Lanczos: {k} eigenpairs not converged after {products} block products (relative residual {worst:.1e})"
            )));
        }
        if used + b > cap {
            // Thick restart: the best Ritz vectors, then the new block.
            let keep = ((cap - b) / 2).max(k).min(used - 1);
            let ritz = times(basis.as_ref().subcols(0, used), y.as_ref().subcols(0, keep));
            basis.as_mut().subcols_mut(0, keep).copy_from(&ritz);
            t.fill(0.0);
            for i in 0..keep {
                t[(i, i)] = theta[i];
            }
            used = keep;
            restarts += 1;
        }
        basis.as_mut().subcols_mut(used, b).copy_from(&next);
        cur = used;
        used += b;
    }
}

/// The whole m×m operator (applied to the identity, a block at a time) and its exact eigendecomposition.
fn dense_eigenpairs(
    m: usize,
    k: usize,
    b: usize,
    apply: &mut impl FnMut(MatRef<'_, f64>) -> Result<Mat<f64>>,
) -> Result<Eigenpairs> {
    let mut a = Mat::<f64>::zeros(m, m);
    let mut products = 0;
    for c0 in (0..m).step_by(b.max(1)) {
        let w = b.min(m - c0);
        let e = Mat::<f64>::from_fn(m, w, |r, c| if r == c0 + c { 1.0 } else { 0.0 });
        let img = apply(e.as_ref())?;
        products += 1;
        if img.nrows() != m || img.ncols() != w {
            return Err(Error::Internal(format!("Lanczos: the operator returned {}×{}", img.nrows(), img.ncols())));
        }
        a.as_mut().subcols_mut(c0, w).copy_from(&img);
    }
    let sym = Mat::from_fn(m, m, |r, c| 0.5 * (a[(r, c)] + a[(c, r)]));
    let (values, vectors) = eigen_desc(sym.as_ref())?;
    Ok(Eigenpairs {
        values: values[..k].to_vec(),
        vectors: vectors.as_ref().subcols(0, k).to_owned(),
        products,
        restarts: 0,
        residual: 0.0,
    })
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // index loops read like the formulas they check
mod tests {
    use super::*;

    /// A symmetric PSD matrix with a known spectrum: Q diag(λ) Qᵀ for a random orthonormal Q.
    fn known(m: usize, lambda: &[f64], seed: u64) -> Mat<f64> {
        let mut rng = SplitMix::new(seed);
        let g = Mat::<f64>::from_fn(m, m, |_, _| rng.normal());
        let q = g.qr().compute_thin_Q();
        let mut out = Mat::<f64>::zeros(m, m);
        let ql = Mat::from_fn(m, m, |r, c| q[(r, c)] * lambda[c]);
        mm(out.as_mut(), Accum::Replace, ql.as_ref(), q.transpose(), 1.0);
        out
    }

    #[test]
    fn finds_the_largest_eigenpairs_of_a_known_spectrum() {
        let m = 300;
        // A slowly decaying spectrum with a near-tie at the 5th/6th values (the hard case for Lanczos).
        let lambda: Vec<f64> = (0..m).map(|i| if i == 5 { 1.0 / 5.0 - 1e-4 } else { 1.0 / (1.0 + i as f64) }).collect();
        let a = known(m, &lambda, 3);
        let params = LanczosParams { k: 8, block: 8, max_basis: 48, tol: 1e-10, max_products: 400 };
        let e = largest_eigenpairs(m, &params, 1, |v| Ok(&a * v)).expect("converges");
        assert!(e.restarts > 0, "the test should cross a restart");
        let mut want = lambda.clone();
        want.sort_by(|x, y| y.total_cmp(x));
        for j in 0..8 {
            assert!((e.values[j] - want[j]).abs() < 1e-12, "λ{j}: {} vs {}", e.values[j], want[j]);
            // Residual of the returned vector, directly.
            let u = e.vectors.as_ref().subcols(j, 1);
            let au = &a * u;
            let res: f64 = (0..m).map(|r| (au[(r, 0)] - e.values[j] * u[(r, 0)]).powi(2)).sum::<f64>().sqrt();
            assert!(res < 1e-9, "residual of pair {j}: {res}");
        }
        // Orthonormal vectors.
        for i in 0..8 {
            for j in 0..8 {
                let d: f64 = (0..m).map(|r| e.vectors[(r, i)] * e.vectors[(r, j)]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn a_low_rank_operator_breaks_down_gracefully() {
        // Rank 5 in 400 dimensions: the Krylov space is exhausted after one block.
        let m = 400;
        let lambda: Vec<f64> = (0..m).map(|i| if i < 5 { 5.0 - i as f64 } else { 0.0 }).collect();
        let a = known(m, &lambda, 9);
        let params = LanczosParams { k: 3, block: 8, max_basis: 40, tol: 1e-10, max_products: 50 };
        let e = largest_eigenpairs(m, &params, 2, |v| Ok(&a * v)).expect("converges");
        for (j, want) in [5.0, 4.0, 3.0].iter().enumerate() {
            assert!((e.values[j] - want).abs() < 1e-12, "λ{j} = {}", e.values[j]);
        }
    }

    #[test]
    fn a_small_operator_is_solved_exactly() {
        let m = 20;
        let lambda: Vec<f64> = (0..m).map(|i| (m - i) as f64).collect();
        let a = known(m, &lambda, 4);
        let e = largest_eigenpairs(m, &LanczosParams::for_k(3), 0, |v| Ok(&a * v)).expect("exact");
        for j in 0..3 {
            assert!((e.values[j] - (m - j) as f64).abs() < 1e-12);
        }
    }
}
