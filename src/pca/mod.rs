//! Covariance and PCA as scikit-learn defines them (explained variance with ddof = 1, explained-variance ratio over the
//! total variance, singular values, mean, components with the largest-|value| entry of each positive, projections,
//! whitening), for sparse input without densifying it.
//!
//! Solvers:
//! * `covariance`: eigendecomposition of the p×p covariance `(XᵀX − n·μμᵀ)/(n−1)`, with `XᵀX` from the backend;
//! * `gram`: eigendecomposition of the n×n Gram matrix of the centred rows, when there are fewer rows than features;
//! * `randomized`: Halko, Martinsson & Tropp's range finder with power iterations, centring implicitly, so every heavy
//!   step is a product with `X` on the backend;
//! * `lanczos`: thick-restart block Lanczos ([`crate::linalg::krylov`]) on the smaller side's scatter matrix, centring
//!   implicitly; on the CPU the feature side's `XᵀX·B` is one fused pass over X.
//!
//! The dense decompositions of the small matrices use faer.

#![allow(clippy::needless_range_loop)] // index loops read like the formulas they implement

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::linalg::dense::Matrix;
use crate::linalg::rng::SplitMix;
use crate::linalg::sparse::Csr;
use crate::runtime::memory::{item, Item};

/// The matrix PCA runs on: a BoW matrix or a numeric table.
#[derive(Debug, Clone)]
pub enum PcaInput {
    Dense(Matrix),
    Sparse(Csr),
}

impl PcaInput {
    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            PcaInput::Dense(m) => (m.rows(), m.cols()),
            PcaInput::Sparse(c) => (c.rows, c.cols),
        }
    }

    /// `X·B` on the backend.
    fn mul(&self, be: &dyn Backend, b: &Matrix) -> Result<Matrix> {
        match self {
            PcaInput::Dense(m) => be.gemm(m, false, b, false),
            PcaInput::Sparse(c) => be.csr_mul(c, b),
        }
    }

    /// `X·B − a·sᵀ` on the backend (`a` `None`: all ones).
    fn mul_minus_outer(&self, be: &dyn Backend, b: &Matrix, a: Option<&[f64]>, s: &[f64]) -> Result<Matrix> {
        match self {
            PcaInput::Dense(m) => {
                crate::backend::check_outer(m.rows(), b.cols(), a, s)?;
                let mut y = be.gemm(m, false, b, false)?;
                crate::backend::subtract_outer(y.data_mut(), 0, a, s);
                Ok(y)
            }
            PcaInput::Sparse(c) => be.csr_mul_minus_outer(c, b, a, s),
        }
    }

    /// `Xᵀ·B` on the backend.
    fn t_mul(&self, be: &dyn Backend, b: &Matrix) -> Result<Matrix> {
        match self {
            PcaInput::Dense(m) => be.gemm(m, true, b, false),
            PcaInput::Sparse(c) => be.csr_t_mul(c, b),
        }
    }

    /// Column means and sums of squared deviations (two-pass; exact for sparse input too).
    fn column_moments(&self) -> (Vec<f64>, Vec<f64>) {
        let (n, p) = self.shape();
        let mut mean = vec![0.0; p];
        let mut ss = vec![0.0; p];
        match self {
            PcaInput::Dense(m) => {
                for r in 0..n {
                    for (s, &x) in mean.iter_mut().zip(m.row(r)) {
                        *s += x;
                    }
                }
                mean.iter_mut().for_each(|s| *s /= n as f64);
                for r in 0..n {
                    for ((s, &x), &mu) in ss.iter_mut().zip(m.row(r)).zip(&mean) {
                        *s += (x - mu) * (x - mu);
                    }
                }
            }
            PcaInput::Sparse(c) => {
                mean = c.column_sums();
                mean.iter_mut().for_each(|s| *s /= n as f64);
                let mut nnz = vec![0usize; p];
                for (&j, &x) in c.indices.iter().zip(&c.values) {
                    let d = x - mean[j as usize];
                    ss[j as usize] += d * d;
                    nnz[j as usize] += 1;
                }
                for j in 0..p {
                    ss[j] += (n - nnz[j]) as f64 * mean[j] * mean[j];
                }
            }
        }
        (mean, ss)
    }

    /// Divides column j by `scale[j]`.
    fn scale_columns(&mut self, scale: &[f64]) {
        match self {
            PcaInput::Dense(m) => {
                let p = m.cols();
                for (i, x) in m.data_mut().iter_mut().enumerate() {
                    *x /= scale[i % p];
                }
            }
            PcaInput::Sparse(c) => {
                for (&j, x) in c.indices.iter().zip(c.values.iter_mut()) {
                    *x /= scale[j as usize];
                }
            }
        }
    }
}

/// A fitted PCA and the projections of its input rows.
#[derive(Debug, Clone)]
pub struct PcaResult {
    /// The solver that ran (never `Auto`).
    pub solver: Solver,
    /// Why `auto` picked it, or "requested".
    pub solver_reason: String,
    pub n_components: usize,
    /// Per component, ddof = 1.
    pub explained_variance: Vec<f64>,
    pub explained_variance_ratio: Vec<f64>,
    pub singular_values: Vec<f64>,
    /// Column means of the (scaled) input.
    pub mean: Vec<f64>,
    /// The column scales applied before centring (1 where not standardized or zero variance).
    pub scale: Vec<f64>,
    /// `n_components × p`, one component per row, orthonormal rows.
    pub components: Matrix,
    /// `n × n_components`: centred rows times the components (whitened when asked).
    pub projections: Matrix,
    /// Sum of the column variances (ddof = 1) of the (scaled) input.
    pub total_variance: f64,
    /// scikit-learn's `noise_variance_`: mean of the variance not kept (0 at full rank).
    pub noise_variance: f64,
    pub whiten: bool,
}

/// Power iterations of the randomized solver unless configured. scikit-learn uses 4 when k ≥ 0.1·min(n, p); on
/// lee_docs at k = 50 that left a summed-EVR error of 1.4e-3, where 7 stays within it at little cost (the products
/// with X are cheap next to the exact solvers).
pub const DEFAULT_POWER_ITERATIONS: usize = 7;

/// The solvers (resolved: `auto` never reaches this module; see [`choose_solver`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// Eigendecomposition of the p×p covariance.
    Covariance,
    /// Eigendecomposition of the n×n Gram matrix of the centred rows (fewer rows than features).
    Gram,
    /// Randomized range finder (Halko et al.) with implicit centring.
    Randomized,
    /// Thick-restart block Lanczos ([`crate::linalg::krylov`]) on the smaller side, with implicit centring.
    Lanczos,
}

/// How many components to keep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Components {
    /// This many (at most min(rows, features), checked when the parameters are resolved).
    Count(usize),
    /// The fewest whose cumulative explained-variance ratio exceeds this fraction (scikit-learn's rule).
    VarianceFraction(f64),
}

/// A PCA fit, fully resolved for one input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct PcaParams {
    pub components: Components,
    pub whiten: bool,
    pub standardize: bool,
    pub solver: Solver,
    /// Why this solver (run.json).
    pub solver_reason: String,
    /// Randomized only: extra random directions and power iterations.
    pub oversamples: usize,
    pub power_iterations: usize,
}

/// Memory the dense p×p or n×n solver matrices may take before the plan refuses them.
const MAX_DENSE_SOLVER_BYTES: usize = 4 << 30;

/// Fits PCA on `input` (consumed: standardization scales it in place): moments and scaling, the solver, then the
/// kept components with their signs fixed and the projections.
pub fn fit(be: &dyn Backend, mut input: PcaInput, plan: &PcaParams, seed: u64) -> Result<PcaResult> {
    // faer's blocked QR and SVD split their work by the thread count, which changed the last bits of the
    // components between 1 and 2 threads (MovieLens, randomized solver): the small dense decompositions run on
    // one thread, the large products stay parallel.
    faer::set_global_parallelism(faer::Par::Seq);
    let (n, p) = input.shape();
    if n < 2 {
        return Err(stage(format!("needs at least 2 rows, the input has {n}")));
    }
    let Moments { mean, ss, scale, centre } = moments(&mut input, plan.standardize);
    let total_variance: f64 = ss.iter().sum::<f64>() / (n - 1) as f64;
    let rank_bound = n.min(p);
    let Solution { explained: explained_variance, components, scores } =
        solve(be, &input, &centre, plan, total_variance, seed)?;
    let ratios: Vec<f64> = explained_variance.iter().map(|v| v / total_variance).collect();
    let k = components_kept(plan.components, &explained_variance, total_variance).min(components.rows());
    let explained_variance: Vec<f64> = explained_variance[..k].to_vec();
    let mut components = Matrix::from_vec(k, p, components.data()[..k * p].to_vec())?;
    let signs = flip_signs(&mut components);
    let mut projections = projections(be, &input, &centre, &components, scores, &signs)?;
    if plan.whiten {
        for r in 0..n {
            for c in 0..k {
                let sd = explained_variance[c].sqrt();
                projections.data_mut()[r * k + c] = if sd > 0.0 { projections.data()[r * k + c] / sd } else { 0.0 };
            }
        }
    }
    let kept: f64 = explained_variance.iter().sum();
    let noise_variance =
        if k < rank_bound { ((total_variance - kept) / (rank_bound - k) as f64).max(0.0) } else { 0.0 };
    Ok(PcaResult {
        solver: plan.solver,
        solver_reason: plan.solver_reason.clone(),
        n_components: k,
        singular_values: explained_variance.iter().map(|v| (v * (n - 1) as f64).max(0.0).sqrt()).collect(),
        explained_variance_ratio: ratios[..k].to_vec(),
        explained_variance,
        mean,
        scale,
        components,
        projections,
        total_variance,
        noise_variance,
        whiten: plan.whiten,
    })
}

/// The input's column means and sums of squares (of the scaled columns), the scale of each column (its standard
/// deviation with `standardize`, else 1), and the mean the products still have to take off (a sparse input's; a
/// dense input is centred here).
struct Moments {
    mean: Vec<f64>,
    ss: Vec<f64>,
    scale: Vec<f64>,
    centre: Vec<f64>,
}

fn moments(input: &mut PcaInput, standardize: bool) -> Moments {
    let (n, p) = input.shape();
    let (mut mean, mut ss) = input.column_moments();
    let mut scale = vec![1.0; p];
    if standardize {
        for j in 0..p {
            let sd = (ss[j] / n as f64).sqrt();
            if sd > 0.0 && sd.is_finite() {
                scale[j] = sd;
            }
        }
        input.scale_columns(&scale);
        for j in 0..p {
            mean[j] /= scale[j];
            ss[j] /= scale[j] * scale[j];
        }
    }
    // A dense input is centred here, in f64, so that no product subtracts nμμᵀ-sized terms afterwards (in f32 on
    // the GPU that cancellation cost fastfood's raw columns, in the thousands, 2e-3 of a projection); a sparse
    // input stays sparse and is centred implicitly through `centre`.
    let centre = match input {
        PcaInput::Dense(m) => {
            m.centre_columns(&mean);
            vec![0.0; p]
        }
        PcaInput::Sparse(_) => mean.clone(),
    };
    Moments { mean, ss, scale, centre }
}

/// The planned solver's eigenpairs (and scores, where it has them).
fn solve(
    be: &dyn Backend,
    input: &PcaInput,
    centre: &[f64],
    plan: &PcaParams,
    total_variance: f64,
    seed: u64,
) -> Result<Solution> {
    let (n, p) = input.shape();
    let wanted = match plan.components {
        Components::Count(k) if k > n.min(p) => {
            return Err(Error::Internal(format!("{k} components planned for a {n}×{p} input")));
        }
        Components::Count(k) => Some(k),
        Components::VarianceFraction(_) => None,
    };
    Ok(match plan.solver {
        Solver::Covariance => Solution::without_scores(covariance_solver(be, input, centre, n, p)?),
        Solver::Gram => {
            // Components cost a product with X each: compute only those kept.
            let keep = |ev: &[f64]| components_kept(plan.components, ev, total_variance);
            gram_solver(be, input, centre, n, keep)?
        }
        Solver::Randomized => {
            let k = wanted.ok_or_else(|| Error::Internal("randomized PCA without a component count".into()))?;
            Solution::without_scores(randomized_solver(be, input, centre, k, plan, seed)?)
        }
        Solver::Lanczos => {
            let k = wanted.ok_or_else(|| Error::Internal("Lanczos PCA without a component count".into()))?;
            lanczos_solver(be, input, centre, k, seed)?
        }
    })
}

/// The rows' projections on the k components: the solver's scores with each column's sign, or (X − 1μᵀ)Vᵀ =
/// X·Vᵀ − 1(μᵀVᵀ), without centring X.
fn projections(
    be: &dyn Backend,
    input: &PcaInput,
    centre: &[f64],
    components: &Matrix,
    scores: Option<Matrix>,
    signs: &[f64],
) -> Result<Matrix> {
    let (n, p) = input.shape();
    let k = components.rows();
    if let Some(scores) = scores.filter(|s| s.rows() == n && s.cols() >= k) {
        let mut out = Matrix::zeros(n, k)?;
        for (o, row) in out.data_mut().chunks_mut(k.max(1)).zip(scores.data().chunks(scores.cols().max(1))) {
            o.iter_mut().zip(row).zip(signs).for_each(|((o, v), s)| *o = v * s);
        }
        return Ok(out);
    }
    let vt = components.transpose();
    let mut projections = input.mul(be, &vt)?;
    let shift: Vec<f64> = (0..k).map(|c| (0..p).map(|j| centre[j] * vt.at(j, c)).sum()).collect();
    for row in projections.data_mut().chunks_mut(k.max(1)) {
        row.iter_mut().zip(&shift).for_each(|(v, s)| *v -= s);
    }
    Ok(projections)
}

/// How many components to keep: the count asked for, or for a variance target scikit-learn's rule (the first k
/// whose cumulative ratio exceeds it, searchsorted side = "right").
fn components_kept(spec: Components, ev: &[f64], total_variance: f64) -> usize {
    match spec {
        Components::Count(k) => k.min(ev.len()),
        Components::VarianceFraction(f) => {
            let mut cum = 0.0;
            for (i, v) in ev.iter().enumerate() {
                cum += v / total_variance;
                if cum > f {
                    return i + 1;
                }
            }
            ev.len().max(1)
        }
    }
}

fn stage(message: String) -> Error {
    Error::Stage { stage: "pca", message }
}

/// Picks the solver for `auto` (`None`): exact (on the smaller side) when the matrix is small (min(n, p) ≤ 500) or
/// most components are wanted (k ≥ 0.8·min(n, p)), as scikit-learn does; Lanczos otherwise, where scikit-learn
/// would pick arpack for sparse input and the randomized solver for dense (Lanczos is exact, and on the benchmark's
/// sparse shapes it was 1.1–2.9× arpack's time and 1.3–6.5× faster than the randomized solver).
pub fn choose_solver(requested: Option<Solver>, n: usize, p: usize, k: Option<usize>) -> (Solver, String) {
    if let Some(solver) = requested {
        return (solver, "requested".into());
    }
    let exact = if p <= n { Solver::Covariance } else { Solver::Gram };
    let side = if p <= n { format!("{p} features ≤ {n} rows") } else { format!("{n} rows < {p} features") };
    let m = n.min(p);
    match k {
        None => (exact, format!("auto: a variance target needs every eigenvalue; {side}")),
        Some(_) if m <= 500 => (exact, format!("auto: exact, {side}")),
        Some(k) if 5 * k >= 4 * m => (exact, format!("auto: exact, {k} components of at most {m}; {side}")),
        Some(k) => (Solver::Lanczos, format!("auto: Lanczos, {k} components of a {n}×{p} matrix")),
    }
}

fn check_dense_size(what: &str, side: usize) -> Result<()> {
    let bytes = side.saturating_mul(side).saturating_mul(8);
    if bytes > MAX_DENSE_SOLVER_BYTES {
        return Err(stage(format!(
            "the {what} matrix would be {side}×{side} f64 = {:.1} GiB, over the {} GiB limit; \
             use solver = \"randomized\" with an integer n_components",
            bytes as f64 / (1u64 << 30) as f64,
            MAX_DENSE_SOLVER_BYTES >> 30
        )));
    }
    Ok(())
}

/// Eigenvalues (descending, clamped at 0) and eigenvectors (as columns, same order) of a symmetric matrix.
fn symmetric_eigen(m: &Matrix) -> Result<(Vec<f64>, Matrix)> {
    let eig = m
        .to_faer()
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| stage(format!("the eigendecomposition did not converge: {e:?}")))?;
    crate::linalg::dense::clear_upper_simd_state();
    let vals = eig.S().column_vector();
    let vecs = eig.U();
    let d = m.rows();
    let mut values = Vec::with_capacity(d);
    let mut vectors = Matrix::zeros(d, d)?;
    for (out_c, c) in (0..d).rev().enumerate() {
        values.push(vals[c].max(0.0));
        for r in 0..d {
            vectors.data_mut()[r * d + out_c] = vecs[(r, c)];
        }
    }
    Ok((values, vectors))
}

/// Covariance solver: explained variances and components (rows) of `(XᵀX − n·μμᵀ)/(n−1)`.
fn covariance_solver(be: &dyn Backend, x: &PcaInput, mean: &[f64], n: usize, p: usize) -> Result<(Vec<f64>, Matrix)> {
    check_dense_size("covariance", p)?;
    let cov = covariance_from(be, x, mean, n)?;
    let (values, vectors) = symmetric_eigen(&cov)?;
    let m = n.min(p);
    Ok((values[..m].to_vec(), Matrix::from_vec(m, p, vectors.transpose().data()[..m * p].to_vec())?))
}

/// The covariance matrix (ddof = 1), centred without densifying a sparse input.
fn covariance_from(be: &dyn Backend, x: &PcaInput, mean: &[f64], n: usize) -> Result<Matrix> {
    let mut g = match x {
        PcaInput::Dense(m) => be.gram_dense(m)?,
        PcaInput::Sparse(c) => be.gram_csr(c)?,
    };
    let p = g.rows();
    let denom = (n - 1) as f64;
    for a in 0..p {
        for b in 0..p {
            let v = (g.data()[a * p + b] - n as f64 * mean[a] * mean[b]) / denom;
            g.data_mut()[a * p + b] = v;
        }
    }
    // Exact symmetry (the products may differ in the last bit).
    for a in 0..p {
        for b in a + 1..p {
            let v = 0.5 * (g.data()[a * p + b] + g.data()[b * p + a]);
            g.data_mut()[a * p + b] = v;
            g.data_mut()[b * p + a] = v;
        }
    }
    Ok(g)
}

/// The sample covariance (ddof = 1) of an input, through the backend.
pub fn covariance(be: &dyn Backend, x: &PcaInput) -> Result<Matrix> {
    let (n, _) = x.shape();
    if n < 2 {
        return Err(stage(format!("covariance needs at least 2 rows, the input has {n}")));
    }
    let (mean, _) = x.column_moments();
    covariance_from(be, x, &mean, n)
}

/// What a solver finds: the explained variances (descending), the components (rows), and where it has them for
/// free, the scores `(X − 1μᵀ)Vᵀ` (n × components; the Gram side's left singular vectors times their singular
/// values), so that the projections need no product with X.
struct Solution {
    explained: Vec<f64>,
    components: Matrix,
    scores: Option<Matrix>,
}

impl Solution {
    fn without_scores((explained, components): (Vec<f64>, Matrix)) -> Solution {
        Solution { explained, components, scores: None }
    }
}

/// Gram solver: eigendecomposition of `(X − 1μᵀ)(X − 1μᵀ)ᵀ` (n×n); components `Vᵢ = (X − 1μᵀ)ᵀuᵢ / sᵢ`.
fn gram_solver(
    be: &dyn Backend,
    x: &PcaInput,
    mean: &[f64],
    n: usize,
    keep: impl Fn(&[f64]) -> usize,
) -> Result<Solution> {
    check_dense_size("Gram", n)?;
    let mut k = match x {
        PcaInput::Dense(m) => be.gemm(m, false, m, true)?,
        PcaInput::Sparse(c) => be.outer_csr(c)?,
    };
    // Centre: K − (Xμ)1ᵀ − 1(Xμ)ᵀ + (μᵀμ)11ᵀ.
    let xmu = x.mul(be, &Matrix::from_vec(mean.len(), 1, mean.to_vec())?)?.into_data();
    let mumu: f64 = mean.iter().map(|m| m * m).sum();
    for a in 0..n {
        for b in 0..n {
            k.data_mut()[a * n + b] += mumu - xmu[a] - xmu[b];
        }
    }
    let (values, u) = symmetric_eigen(&k)?;
    let p = mean.len();
    let explained: Vec<f64> = values[..n.min(p)].iter().map(|v| v / (n - 1) as f64).collect();
    let m = keep(&explained).clamp(1, n.min(p));
    // Components: Xᵀu − μ(1ᵀu), scaled to unit length by sᵢ.
    let u_m = Matrix::from_vec(n, m, (0..n).flat_map(|r| u.row(r)[..m].to_vec()).collect())?;
    let xtu = x.t_mul(be, &u_m)?;
    let colsum: Vec<f64> = (0..m).map(|c| (0..n).map(|r| u_m.at(r, c)).sum()).collect();
    let mut comps = Matrix::zeros(m, p)?;
    for c in 0..m {
        let s = values[c].sqrt();
        for j in 0..p {
            let v = xtu.at(j, c) - mean[j] * colsum[c];
            comps.data_mut()[c * p + j] = if s > 0.0 { v / s } else { 0.0 };
        }
    }
    // (X − 1μᵀ)Vᵢ = (X − 1μᵀ)(X − 1μᵀ)ᵀuᵢ / sᵢ = sᵢuᵢ.
    let scores = scaled_columns(&u_m, &values[..m]);
    Ok(Solution { explained, components: comps, scores: Some(scores) })
}

/// `u·diag(√λ)`: the scores of the components whose left singular vectors are u's columns (a zero for a component
/// without variance, as its component is zero).
fn scaled_columns(u: &Matrix, eigenvalues: &[f64]) -> Matrix {
    let s: Vec<f64> = eigenvalues.iter().map(|v| v.max(0.0).sqrt()).collect();
    let mut out = u.clone();
    for row in out.data_mut().chunks_mut(u.cols().max(1)) {
        row.iter_mut().zip(&s).for_each(|(v, s)| *v *= s);
    }
    out
}

/// `1ᵀB`: the column sums of B, summed row by row.
fn column_sums(b: &Matrix) -> Vec<f64> {
    let mut out = vec![0.0; b.cols()];
    for row in b.data().chunks(b.cols().max(1)) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
    }
    out
}

/// `μᵀB` (B p×k), summed row by row.
fn mean_times(mean: &[f64], b: &Matrix) -> Vec<f64> {
    let mut out = vec![0.0; b.cols()];
    for (row, mu) in b.data().chunks(b.cols().max(1)).zip(mean) {
        out.iter_mut().zip(row).for_each(|(o, v)| *o += mu * v);
    }
    out
}

/// `(X − 1μᵀ)·B = X·B − 1(μᵀB)`.
fn centred_mul(be: &dyn Backend, x: &PcaInput, mean: &[f64], b: &Matrix) -> Result<Matrix> {
    x.mul_minus_outer(be, b, None, &mean_times(mean, b))
}

/// `(X − 1μᵀ)ᵀ·B = Xᵀ·B − μ(1ᵀB)`.
fn centred_t_mul(be: &dyn Backend, x: &PcaInput, mean: &[f64], b: &Matrix) -> Result<Matrix> {
    let mut z = x.t_mul(be, b)?;
    centre_t(&mut z, mean, b);
    Ok(z)
}

/// `Z −= μ(1ᵀB)`: turns `Xᵀ·B` into `(X − 1μᵀ)ᵀ·B`.
fn centre_t(z: &mut Matrix, mean: &[f64], b: &Matrix) {
    let colsum = column_sums(b);
    for (row, mu) in z.data_mut().chunks_mut(b.cols().max(1)).zip(mean) {
        for (v, s) in row.iter_mut().zip(&colsum) {
            *v -= mu * s;
        }
    }
}

/// `(X − 1μᵀ)ᵀ(X − 1μᵀ)·B = XᵀX·B − n·μ(μᵀB)` (the scatter matrix, p×p, times B).
fn scatter_mul(be: &dyn Backend, x: &PcaInput, mean: &[f64], b: &Matrix) -> Result<Matrix> {
    let (n, _) = x.shape();
    let mut out = match x {
        PcaInput::Sparse(c) => be.csr_gram_mul(c, b)?,
        PcaInput::Dense(m) => be.gemm(m, true, &be.gemm(m, false, b, false)?, false)?,
    };
    let shift = mean_times(mean, b);
    for (row, mu) in out.data_mut().chunks_mut(b.cols().max(1)).zip(mean) {
        for (v, s) in row.iter_mut().zip(&shift) {
            *v -= n as f64 * mu * s;
        }
    }
    Ok(out)
}

/// Lanczos solver: the k largest eigenpairs of the scatter matrix on the smaller side, `CᵀC` (p×p) when p ≤ n,
/// else `CCᵀ` (n×n) with components `Cᵀuᵢ / sᵢ` as the Gram solver takes them; C = X − 1μᵀ is never formed.
/// The CPU's f64 products converge to a relative residual of 1e-8; f32 products on a GPU to 1e-5.
fn lanczos_solver(be: &dyn Backend, x: &PcaInput, mean: &[f64], k: usize, seed: u64) -> Result<Solution> {
    let (n, p) = x.shape();
    let mut params = crate::linalg::krylov::LanczosParams::for_k(k);
    if be.kind() != crate::backend::BackendKind::Cpu {
        params.tol = 1e-5;
    }
    let faer_of = |m: Matrix| m.to_faer();
    let mut comps = Matrix::zeros(k, p)?;
    let mut scores = None;
    let eig = if p <= n {
        let eig = crate::linalg::krylov::largest_eigenpairs(p, &params, seed, |v| {
            scatter_mul(be, x, mean, &Matrix::from_faer(v)).map(faer_of)
        })?;
        for c in 0..k {
            for j in 0..p {
                comps.data_mut()[c * p + j] = eig.vectors[(j, c)];
            }
        }
        eig
    } else {
        // Xᵀ·U as a product with the transpose, stored once: a gather per output row instead of a scatter.
        let xt = match x {
            PcaInput::Sparse(c) => PcaInput::Sparse(c.transpose()),
            PcaInput::Dense(m) => PcaInput::Dense(m.transpose()),
        };
        let eig = crate::linalg::krylov::largest_eigenpairs(n, &params, seed, |u| {
            let u = Matrix::from_faer(u);
            let z = xt.mul_minus_outer(be, &u, Some(mean), &column_sums(&u))?;
            centred_mul(be, x, mean, &z).map(faer_of)
        })?;
        let u = Matrix::from_faer(eig.vectors.as_ref());
        let z = centred_t_mul(be, x, mean, &u)?;
        for c in 0..k {
            let s = eig.values[c].max(0.0).sqrt();
            for j in 0..p {
                comps.data_mut()[c * p + j] = if s > 0.0 { z.at(j, c) / s } else { 0.0 };
            }
        }
        scores = Some(scaled_columns(&u, &eig.values));
        eig
    };
    crate::linalg::dense::clear_upper_simd_state();
    be.release_scratch();
    let explained = eig.values.iter().map(|v| v.max(0.0) / (n - 1) as f64).collect();
    Ok(Solution { explained, components: comps, scores })
}

/// Randomized solver (Halko et al. 2011, algorithm 4.4 with QR between power iterations), centring implicitly:
/// `(X − 1μᵀ)B = XB − 1(μᵀB)` and `(X − 1μᵀ)ᵀB = XᵀB − μ(1ᵀB)`.
fn randomized_solver(
    be: &dyn Backend,
    x: &PcaInput,
    mean: &[f64],
    k: usize,
    plan: &PcaParams,
    seed: u64,
) -> Result<(Vec<f64>, Matrix)> {
    let (n, p) = x.shape();
    let l = (k + plan.oversamples).min(n.min(p));
    let iters = plan.power_iterations;
    let mut rng = SplitMix::new(seed ^ 0x5043_415f_7261_6e64);
    let omega = Matrix::from_vec(p, l, (0..p * l).map(|_| rng.normal()).collect())?;
    let centred_mul = |b: &Matrix| centred_mul(be, x, mean, b);
    let centred_t_mul = |b: &Matrix| centred_t_mul(be, x, mean, b);
    let mut q = orthonormal_columns(&centred_mul(&omega)?);
    for _ in 0..iters {
        let z = orthonormal_columns(&centred_t_mul(&q)?);
        q = orthonormal_columns(&centred_mul(&z)?);
    }
    // Bᵀ = (X − 1μᵀ)ᵀQ (p×l) = W S Zᵀ, so X − 1μᵀ ≈ Q Z S Wᵀ: the components are the columns of W.
    let bt = centred_t_mul(&q)?;
    let svd = bt.to_faer().thin_svd().map_err(|e| stage(format!("the SVD did not converge: {e:?}")))?;
    crate::linalg::dense::clear_upper_simd_state();
    let s = svd.S().column_vector();
    let w = svd.U();
    let mut comps = Matrix::zeros(k, p)?;
    let mut ev = Vec::with_capacity(k);
    for c in 0..k {
        ev.push(s[c] * s[c] / (n - 1) as f64);
        for j in 0..p {
            comps.data_mut()[c * p + j] = w[(j, c)];
        }
    }
    Ok((ev, comps))
}

/// Q of the thin QR decomposition.
fn orthonormal_columns(m: &Matrix) -> Matrix {
    let q = m.to_faer().qr().compute_thin_Q();
    // faer's AVX-512 code leaves the upper register state dirty (see `linalg::dense::clear_upper_simd_state`).
    crate::linalg::dense::clear_upper_simd_state();
    Matrix::from_faer(q.as_ref())
}

/// scikit-learn's sign convention: each component's largest-|value| entry is positive. Returns the factor each
/// component was multiplied by (1 or −1).
fn flip_signs(components: &mut Matrix) -> Vec<f64> {
    let p = components.cols();
    let mut signs = vec![1.0; components.rows()];
    for (c, flipped) in signs.iter_mut().enumerate() {
        let row = &mut components.data_mut()[c * p..(c + 1) * p];
        let mut best = 0.0f64;
        let mut sign = 1.0;
        for &v in row.iter() {
            if v.abs() > best {
                best = v.abs();
                sign = v.signum();
            }
        }
        if sign < 0.0 {
            row.iter_mut().for_each(|v| *v = -*v);
            *flipped = -1.0;
        }
    }
    signs
}

/// The main allocations of a fit for an n×p input, k components.
pub fn memory_plan(n: usize, p: usize, solver: Solver, k: usize, oversamples: usize) -> Vec<Item> {
    let (n, p, k) = (n as u64, p as u64, k as u64);
    match solver {
        Solver::Covariance => vec![item(format!("covariance {p} × {p} × 8 B (and its eigenvectors)"), 2 * p * p, 8)],
        Solver::Gram => vec![item(format!("Gram matrix {n} × {n} × 8 B (and its eigenvectors)"), 2 * n * n, 8)],
        Solver::Lanczos => {
            let lp = crate::linalg::krylov::LanczosParams::for_k(k as usize);
            let (block, cols) = (lp.block as u64, (lp.max_basis + lp.block) as u64);
            let m = n.min(p);
            vec![
                item(format!("Lanczos basis {m} × {cols} × 8 B"), m * cols, 8),
                item(format!("block products ({n} + 4 × {p}) × {block} × 8 B"), (n + 4 * p) * block, 8),
            ]
        }
        Solver::Randomized => {
            let l = k + oversamples as u64;
            vec![item(format!("random ranges ({n} + {p}) × {l} × 8 B, three copies"), 3 * (n + p) * l, 8)]
        }
    }
}
