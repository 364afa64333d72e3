//! Seeded properties of covariance and PCA on small random inputs, for every solver and for dense and sparse input.

use embjob::backend::{Backend, Cpu};
use embjob::linalg::dense::Matrix;
use embjob::linalg::rng::SplitMix;
use embjob::linalg::sparse::Csr;
use embjob::pca::{self, PcaInput, PcaParams, Solver};
use embjob::plan::config::{ComponentsSpec, PcaSolver};
use embjob::plan::PcaPlan;

use crate::support::*;

/// A random n×p matrix with about `density` of its entries non-zero (small integers, like counts).
fn random_sparse(seed: u64, n: usize, p: usize, density: f64) -> Csr {
    let mut rng = SplitMix::new(seed);
    let rows: Vec<Vec<(u32, f64)>> = (0..n)
        .map(|_| {
            let mut row = Vec::new();
            for c in 0..p as u32 {
                if rng.next_f64() < density {
                    row.push((c, 1.0 + rng.below(4) as f64));
                }
            }
            row
        })
        .collect();
    Csr::from_rows(p, &rows)
}

/// The fit's parameters for an input of `shape`, resolved as the PCA stage resolves them.
fn plan(k: ComponentsSpec, solver: PcaSolver, shape: (usize, usize)) -> PcaParams {
    PcaPlan { n_components: k, whiten: false, standardize: false, solver, oversamples: 10, power_iterations: None }
        .resolve(shape.0, shape.1)
        .expect("resolve")
}

fn dense_of(x: &Csr) -> Matrix {
    Matrix::from_vec(x.rows, x.cols, x.to_dense()).expect("shape")
}

fn covariance_of_sparse_input_equals_dense_and_is_symmetric_psd(be: &dyn Backend) {
    for seed in 0..5 {
        let x = random_sparse(seed, 40, 12, 0.3);
        let sparse = pca::covariance(be, &PcaInput::Sparse(x.clone())).expect("sparse");
        let dense = pca::covariance(be, &PcaInput::Dense(dense_of(&x))).expect("dense");
        for (a, b) in sparse.data().iter().zip(dense.data()) {
            assert!((a - b).abs() < tolerance(be, 1e-12, 1e-4), "{:?} seed {seed}: {a} vs {b}", be.kind());
        }
        for i in 0..12 {
            for j in 0..12 {
                assert_eq!(sparse.at(i, j), sparse.at(j, i), "symmetric");
            }
        }
        let eig = sparse.to_faer().self_adjoint_eigenvalues(faer::Side::Lower).expect("eig");
        assert!(eig.iter().all(|&v| v > -tolerance(be, 1e-10, 1e-5)), "seed {seed}: not PSD: {eig:?}");
    }
}

#[test]
fn covariance_equals_numpy_cov_on_digits() {
    let df = read_parquet(&fixture("digits.parquet"));
    let cols: Vec<String> = (0..64).map(|i| format!("pixel_{i}")).collect();
    let n = df.height();
    let mut values = vec![0.0; n * 64];
    for (j, c) in cols.iter().enumerate() {
        for (r, v) in f64s(&df, c).into_iter().enumerate() {
            values[r * 64 + j] = v;
        }
    }
    let cov =
        pca::covariance(&Cpu::new(), &PcaInput::Dense(Matrix::from_vec(n, 64, values).expect("shape"))).expect("cov");
    let want = read_parquet(&fixture("cov_digits_raw.parquet"));
    let (i, j, v) = (i64s(&want, "i"), i64s(&want, "j"), f64s(&want, "cov"));
    assert_eq!(v.len(), 64 * 64);
    for r in 0..v.len() {
        let got = cov.at(i[r] as usize, j[r] as usize);
        assert!((got - v[r]).abs() <= 1e-9 * v[r].abs().max(1.0), "cov[{},{}] {got} vs numpy {}", i[r], j[r], v[r]);
    }
}

fn components_are_orthonormal_for_every_solver_and_input_kind(be: &dyn Backend) {
    for (seed, (n, p)) in [(1u64, (30usize, 10usize)), (2, (8, 20)), (3, (50, 25))] {
        let x = random_sparse(seed, n, p, 0.4);
        for solver in [PcaSolver::Covariance, PcaSolver::Gram, PcaSolver::Randomized, PcaSolver::Lanczos] {
            for input in [PcaInput::Sparse(x.clone()), PcaInput::Dense(dense_of(&x))] {
                let k = 5.min(n.min(p));
                let params = plan(ComponentsSpec::Count(k as u64), solver, (n, p));
                let r = pca::fit(be, input, &params, seed).expect("fit");
                let c = &r.components;
                for a in 0..k {
                    for b in 0..k {
                        let dot: f64 = (0..p).map(|j| c.at(a, j) * c.at(b, j)).sum();
                        let want = if a == b { 1.0 } else { 0.0 };
                        let tol = tolerance(be, 1e-9, 1e-5);
                        assert!(
                            (dot - want).abs() < tol,
                            "{:?} {solver:?} seed {seed}: <c{a}, c{b}> = {dot}",
                            be.kind()
                        );
                    }
                }
                // Explained variances descend.
                assert!(r.explained_variance.windows(2).all(|w| w[0] >= w[1] - tolerance(be, 1e-12, 1e-5)));
            }
        }
    }
}

fn the_three_solvers_agree(be: &dyn Backend) {
    let x = random_sparse(7, 60, 18, 0.35);
    let k = 4;
    let fits: Vec<_> = [PcaSolver::Covariance, PcaSolver::Gram, PcaSolver::Randomized, PcaSolver::Lanczos]
        .into_iter()
        .map(|s| {
            pca::fit(be, PcaInput::Sparse(x.clone()), &plan(ComponentsSpec::Count(k), s, (60, 18)), 3).expect("fit")
        })
        .collect();
    for f in &fits[1..] {
        // The exact solvers agree to rounding; the randomized one to its (small) approximation error; f32 products
        // on the GPU to 1e-4.
        let (ev_tol, comp_tol) = if f.solver == Solver::Randomized { (1e-6, 1e-4) } else { (1e-10, 1e-8) };
        let (ev_tol, comp_tol) = (tolerance(be, ev_tol, 1e-5), tolerance(be, comp_tol, 1e-3));
        for (a, b) in f.explained_variance.iter().zip(&fits[0].explained_variance) {
            assert!((a - b).abs() < ev_tol * b.max(1.0), "{:?}: {a} vs {b}", f.solver);
        }
        for (a, b) in f.components.data().iter().zip(fits[0].components.data()) {
            assert!((a - b).abs() < comp_tol, "{:?}: components differ ({a} vs {b})", f.solver);
        }
    }
}

/// Lanczos iterations (the operator is too large to be solved whole: 150 dimensions on its smaller side) reach
/// the covariance solver's variances and components, on the feature side (p ≤ n) and the document side (n < p),
/// for sparse and dense input, on every backend.
fn lanczos_iterations_reach_the_exact_solution_on_both_sides(be: &dyn Backend) {
    for (seed, (n, p)) in [(21u64, (400usize, 150usize)), (22, (150, 400))] {
        let x = random_sparse(seed, n, p, 0.08);
        let k = 6;
        let exact = pca::fit(
            be,
            PcaInput::Sparse(x.clone()),
            &plan(ComponentsSpec::Count(k), PcaSolver::Covariance, (n, p)),
            0,
        )
        .expect("covariance");
        for input in [PcaInput::Sparse(x.clone()), PcaInput::Dense(dense_of(&x))] {
            let r =
                pca::fit(be, input, &plan(ComponentsSpec::Count(k), PcaSolver::Lanczos, (n, p)), 5).expect("lanczos");
            assert_eq!(r.solver, Solver::Lanczos);
            let (ev_tol, comp_tol) = (tolerance(be, 1e-10, 1e-5), tolerance(be, 1e-6, 1e-3));
            for (a, b) in r.explained_variance.iter().zip(&exact.explained_variance) {
                assert!((a - b).abs() < ev_tol * b.max(1.0), "{:?} {n}×{p}: variance {a} vs {b}", be.kind());
            }
            for (a, b) in r.components.data().iter().zip(exact.components.data()) {
                assert!((a - b).abs() < comp_tol, "{:?} {n}×{p}: components differ ({a} vs {b})", be.kind());
            }
            // On the document side the projections are the solver's scores (uᵢsᵢ), not a product with X.
            let scale = exact.projections.data().iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (a, b) in r.projections.data().iter().zip(exact.projections.data()) {
                assert!((a - b).abs() < comp_tol * scale, "{:?} {n}×{p}: projections {a} vs {b}", be.kind());
            }
        }
    }
}

fn projections_reconstruct_the_centred_data_at_full_rank(be: &dyn Backend) {
    // The covariance solver's projections are products with X; the Gram solver's are its scores (uᵢsᵢ).
    let x = random_sparse(11, 25, 6, 0.5);
    let dense = dense_of(&x);
    for solver in [PcaSolver::Covariance, PcaSolver::Gram] {
        let params = plan(ComponentsSpec::Count(6), solver, (25, 6));
        let r = pca::fit(be, PcaInput::Sparse(x.clone()), &params, 0).expect("fit");
        for row in 0..25 {
            for j in 0..6 {
                let back: f64 = (0..6).map(|c| r.projections.at(row, c) * r.components.at(c, j)).sum();
                let centred = dense.at(row, j) - r.mean[j];
                let tol = tolerance(be, 1e-9, 1e-4);
                assert!(
                    (back - centred).abs() < tol,
                    "{:?} {solver:?} row {row} col {j}: {back} vs {centred}",
                    be.kind()
                );
            }
        }
    }
}

fn whitened_projections_have_unit_variance(be: &dyn Backend) {
    let x = random_sparse(5, 80, 10, 0.4);
    let mut p = plan(ComponentsSpec::Count(3), PcaSolver::Covariance, (80, 10));
    p.whiten = true;
    let r = pca::fit(be, PcaInput::Sparse(x.clone()), &p, 0).expect("fit");
    for c in 0..3 {
        let var: f64 = (0..80).map(|i| r.projections.at(i, c).powi(2)).sum::<f64>() / 79.0;
        assert!((var - 1.0).abs() < tolerance(be, 1e-9, 1e-4), "{:?} component {c}: variance {var}", be.kind());
    }
}

#[test]
fn variance_target_picks_the_fewest_components() {
    let x = random_sparse(9, 40, 12, 0.4);
    let full_plan = plan(ComponentsSpec::Count(12), PcaSolver::Covariance, (40, 12));
    let full = pca::fit(&Cpu::new(), PcaInput::Sparse(x.clone()), &full_plan, 0).expect("fit");
    for target in [0.3, 0.5, 0.8, 0.95] {
        let params = plan(ComponentsSpec::VarianceFraction(target), PcaSolver::Auto, (40, 12));
        let r = pca::fit(&Cpu::new(), PcaInput::Sparse(x.clone()), &params, 0).expect("fit");
        let k = r.n_components;
        let cum: f64 = full.explained_variance_ratio[..k].iter().sum();
        let before: f64 = full.explained_variance_ratio[..k - 1].iter().sum();
        assert!(cum > target && before <= target, "target {target}: k = {k} (cum {cum}, before {before})");
    }
}

#[test]
fn more_components_than_rows_or_features_is_an_error() {
    let spec = PcaPlan {
        n_components: ComponentsSpec::Count(6),
        whiten: false,
        standardize: false,
        solver: PcaSolver::Auto,
        oversamples: 10,
        power_iterations: None,
    };
    let e = spec.resolve(5, 8).expect_err("k > n");
    assert!(e.to_string().contains("min(rows, features)"), "{e}");
    assert_eq!(e.exit_code(), 3);
}

fn sparse_products_match_dense_products(be: &dyn Backend) {
    let x = random_sparse(21, 17, 9, 0.4);
    let d = dense_of(&x);
    let mut rng = SplitMix::new(4);
    let b = Matrix::from_vec(9, 3, (0..27).map(|_| rng.normal()).collect()).expect("shape");
    let c = Matrix::from_vec(17, 3, (0..51).map(|_| rng.normal()).collect()).expect("shape");
    let pairs = [
        (be.csr_mul(&x, &b).expect("xb"), be.gemm(&d, false, &b, false).expect("dense xb")),
        (be.csr_t_mul(&x, &c).expect("xtc"), be.gemm(&d, true, &c, false).expect("dense xtc")),
        (be.gram_csr(&x).expect("gram"), be.gram_dense(&d).expect("dense gram")),
        (be.outer_csr(&x).expect("outer"), be.gemm(&d, false, &d, true).expect("dense outer")),
    ];
    for (i, (s, dn)) in pairs.iter().enumerate() {
        assert_eq!((s.rows(), s.cols()), (dn.rows(), dn.cols()));
        for (a, b) in s.data().iter().zip(dn.data()) {
            assert!((a - b).abs() < tolerance(be, 1e-12, 1e-4), "{:?} product {i}: {a} vs {b}", be.kind());
        }
    }
}

/// `X·B − a·sᵀ` (PCA's implicit centring) equals the dense product minus the outer product, with a per-row `a` and
/// with all ones, over more rows than one block of the CPU's (256).
fn sparse_product_minus_a_rank_one_term(be: &dyn Backend) {
    let (n, p, k) = (600, 9, 3);
    let x = random_sparse(22, n, p, 0.3);
    let d = dense_of(&x);
    let mut rng = SplitMix::new(5);
    let b = Matrix::from_vec(p, k, (0..p * k).map(|_| rng.normal()).collect()).expect("shape");
    let a: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let s: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
    let xb = be.gemm(&d, false, &b, false).expect("dense xb");
    for rows in [Some(&a[..]), None] {
        let got = be.csr_mul_minus_outer(&x, &b, rows, &s).expect("product");
        for r in 0..n {
            for (c, s) in s.iter().enumerate() {
                let want = xb.at(r, c) - rows.map_or(1.0, |a| a[r]) * s;
                let tol = tolerance(be, 1e-12, 1e-4) * (1.0 + want.abs());
                assert!((got.at(r, c) - want).abs() < tol, "{:?} ({r}, {c}): {} vs {want}", be.kind(), got.at(r, c));
            }
        }
    }
    let err = be.csr_mul_minus_outer(&x, &b, Some(&a[..10]), &s).expect_err("a of 10 values for 600 rows");
    assert!(err.to_string().contains("10 × 3 values for a 600 × 3 product"), "{err}");
}

on_each_backend!(
    covariance_of_sparse_input_equals_dense_and_is_symmetric_psd,
    components_are_orthonormal_for_every_solver_and_input_kind,
    the_three_solvers_agree,
    lanczos_iterations_reach_the_exact_solution_on_both_sides,
    projections_reconstruct_the_centred_data_at_full_rank,
    whitened_projections_have_unit_variance,
    sparse_products_match_dense_products,
    sparse_product_minus_a_rank_one_term,
);
