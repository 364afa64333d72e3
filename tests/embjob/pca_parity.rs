//! PCA equals scikit-learn on real data (reference values from shared/peers/ref_pca.py, reduced by
//! tests/fixtures/make_pca_refs.py): explained-variance ratios within 1e-6 for the exact solvers, components and
//! projections equal up to sign within 1e-4, and the randomized solver within scikit-learn's own randomized error.

use crate::support::*;

/// scikit-learn's values of one dataset.
struct Reference {
    rows: Vec<(String, i64, String, i64, i64, f64)>,
}

impl Reference {
    fn load(dataset: &str) -> Reference {
        let df = read_parquet(&fixture(&format!("pca_ref_{dataset}.parquet")));
        let solver = strs(&df, "solver");
        let k = i64s(&df, "n_components");
        let kind = strs(&df, "kind");
        let i = i64s(&df, "i");
        let j = i64s(&df, "j");
        let v = f64s(&df, "value");
        let rows = (0..df.height()).map(|r| (solver[r].clone(), k[r], kind[r].clone(), i[r], j[r], v[r])).collect();
        Reference { rows }
    }

    /// Per-component values of one run (explained_variance, explained_variance_ratio, singular_value).
    fn per_component(&self, solver: &str, k: i64, kind: &str) -> Vec<f64> {
        let mut v: Vec<(i64, f64)> =
            self.rows.iter().filter(|r| r.0 == solver && r.1 == k && r.2 == kind).map(|r| (r.3, r.5)).collect();
        v.sort_by_key(|x| x.0);
        assert!(!v.is_empty(), "no reference for {solver} k={k} {kind}");
        v.into_iter().map(|x| x.1).collect()
    }

    /// Matrix entries (i, j) -> value of a kind of the full run (component: i = component; projection: i = row).
    fn matrix(&self, kind: &str) -> Vec<(i64, i64, f64)> {
        self.rows.iter().filter(|r| r.0 == "full" && r.2 == kind).map(|r| (r.3, r.4, r.5)).collect()
    }
}

/// Runs embjob's PCA on a pipeline, returning the job (outputs under out/latest).
fn run_pca(input_toml: &str, pca_toml: &str) -> Job {
    run_pca_on("cpu", input_toml, pca_toml)
}

/// [`run_pca`] on a backend (`cpu` or `gpu`).
fn run_pca_on(backend: &str, input_toml: &str, pca_toml: &str) -> Job {
    let job = Job::new().toml(&format!(
        "[job]\nname = \"pca\"\nbackend = \"{backend}\"\nseed = 0\n{input_toml}\n[pca]\n{pca_toml}\n[output]\ndir = \"out\"\n"
    ));
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    job
}

fn lee_input(min_df: u32) -> String {
    format!(
        "[input]\npath = {:?}\nlayout = \"text\"\nid = \"doc_id\"\n[bow]\nmin_df = {min_df}\n",
        fixture("lee_docs.parquet")
    )
}

fn digits_input() -> String {
    format!(
        "[input]\npath = {:?}\nlayout = \"numeric\"\nid = \"image_id\"\nexclude = [\"target\"]\n",
        fixture("digits.parquet")
    )
}

const FASTFOOD_NONULL: &str =
    r#"["calories", "cal_fat", "total_fat", "sat_fat", "trans_fat", "cholesterol", "sodium", "total_carb", "sugar"]"#;
const FASTFOOD_ALL: &str = r#"["calories", "cal_fat", "total_fat", "sat_fat", "trans_fat", "cholesterol", "sodium", "total_carb", "fiber", "sugar", "protein", "vit_a", "vit_c", "calcium"]"#;

fn fastfood_input(complete: bool) -> String {
    let (file, cols) =
        if complete { ("fastfood_complete.parquet", FASTFOOD_ALL) } else { ("fastfood.parquet", FASTFOOD_NONULL) };
    format!("[input]\npath = {:?}\nlayout = \"numeric\"\nid = \"item_id\"\ncolumns = {cols}\n", fixture(file))
}

/// Metric values of stage pca, by index.
fn pca_metric(job: &Job, metric: &str) -> Vec<f64> {
    let m = job.latest_parquet("metrics.parquet");
    let names = strs(&m, "metric");
    let stages = strs(&m, "stage");
    let values = f64s(&m, "value");
    let index = m.column("index").expect("index").as_materialized_series().i64().expect("i64").clone();
    let mut v: Vec<(i64, f64)> = (0..m.height())
        .filter(|&r| stages[r] == "pca" && names[r] == metric)
        .filter_map(|r| index.get(r).map(|i| (i, values[r])))
        .collect();
    v.sort_by_key(|x| x.0);
    v.into_iter().map(|x| x.1).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "{what}[{i}]: {g} vs scikit-learn {w} (tol {tol})");
    }
}

/// Components (k × p, from pca_components.parquet) and projections (n × k) equal scikit-learn's up to one sign per
/// component, within `tol` relative to max(1, |value|).
fn assert_components_and_projections(job: &Job, reference: &Reference, k: usize, tol: f64) {
    let comps = job.latest_parquet("pca_components.parquet");
    let c = i64s(&comps, "component");
    let names = comps.get_column_names().iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let feature_col = if names.iter().any(|n| n == "token_id") { "token_id" } else { "feature_id" };
    let f = i64s(&comps, feature_col);
    let l = f64s(&comps, "loading");
    let p = f.iter().max().map_or(0, |m| *m as usize + 1);
    let mut ours = vec![0.0; k * p];
    for r in 0..comps.height() {
        ours[c[r] as usize * p + f[r] as usize] = l[r];
    }
    let mut signs = vec![0.0; k];
    let want = reference.matrix("component");
    for &(i, j, w) in want.iter().filter(|e| (e.0 as usize) < k) {
        let g = ours[i as usize * p + j as usize];
        if signs[i as usize] == 0.0 && w.abs() > 1e-3 {
            signs[i as usize] = if (g > 0.0) == (w > 0.0) { 1.0 } else { -1.0 };
        }
    }
    for &(i, j, w) in want.iter().filter(|e| (e.0 as usize) < k) {
        let g = signs[i as usize] * ours[i as usize * p + j as usize];
        assert!((g - w).abs() <= tol * w.abs().max(1.0), "component {i}, feature {j}: {g} vs scikit-learn {w}");
    }
    let proj = job.latest_parquet("pca_projections.parquet");
    let vectors = proj.column("vector").expect("vector").as_materialized_series().clone();
    let flat =
        vectors.explode(polars::prelude::ExplodeOptions { empty_as_null: false, keep_nulls: true }).expect("explode");
    let flat: Vec<f64> = flat
        .cast(&polars::prelude::DataType::Float64)
        .expect("cast")
        .f64()
        .expect("f64")
        .iter()
        .map(|v| v.expect("value"))
        .collect();
    assert_eq!(flat.len(), proj.height() * k);
    // scikit-learn's projection rows are the input's ids (doc_id, image_id, item_id).
    let at: std::collections::HashMap<i64, usize> =
        strs(&proj, "row").iter().enumerate().map(|(r, id)| (id.parse::<i64>().expect("integer id"), r)).collect();
    for (id, c, w) in reference.matrix("projection").into_iter().filter(|e| (e.1 as usize) < k) {
        let r = at[&id];
        let g = signs[c as usize] * flat[r * k + c as usize];
        // Projections are stored as float32: allow its rounding on top of the tolerance.
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0) + 1e-6 * w.abs(),
            "projection of id {id}, component {c}: {g} vs {w}"
        );
    }
}

/// Exact solvers against scikit-learn, on every backend: the CPU's f64 products to 1e-6 (ratios) and 1e-8
/// (variances, relative to each); the GPU's f32 products to 1e-5 of the largest variance (Weyl's bound: an f32
/// XᵀX − nμμᵀ perturbs every eigenvalue by about ε·λ₁, e.g. 1.5e-4 of fastfood's 8th component, whose raw columns
/// are in the thousands); components and projections to 1e-4 and 1e-3.
fn exact_parity(dataset: &str, input: &str, pca_extra: &str, k: i64) {
    let mut backends = vec![("cpu", 1e-6, 1e-8, 1e-4)];
    if gpu_backend().is_some() {
        backends.push(("gpu", 1e-5, 1e-5, 1e-3));
    }
    for (backend, evr_tol, ev_tol, vec_tol) in backends {
        let job = run_pca_on(backend, input, &format!("n_components = {k}\n{pca_extra}"));
        let what = format!("{dataset} on the {backend}");
        let reference = Reference::load(dataset);
        assert_close(
            &pca_metric(&job, "explained_variance_ratio"),
            &reference.per_component("full", k, "explained_variance_ratio"),
            evr_tol,
            &format!("{what}: EVR"),
        );
        // The scale of the error: each value on the CPU, the largest on the GPU.
        let scale = |w: f64, largest: f64| if backend == "cpu" { w.abs().max(1.0) } else { largest.max(1.0) };
        let ev = reference.per_component("full", k, "explained_variance");
        let got = pca_metric(&job, "explained_variance");
        for (i, (g, w)) in got.iter().zip(&ev).enumerate() {
            assert!((g - w).abs() <= ev_tol * scale(*w, ev[0]), "{what}: explained_variance[{i}] {g} vs {w}");
        }
        let sv = reference.per_component("full", k, "singular_value");
        let got = pca_metric(&job, "singular_value");
        for (i, (g, w)) in got.iter().zip(&sv).enumerate() {
            assert!((g - w).abs() <= ev_tol * scale(*w, sv[0]), "{what}: singular_value[{i}] {g} vs {w}");
        }
        assert_components_and_projections(&job, &reference, k.min(10) as usize, vec_tol);
    }
}

#[test]
fn lee_min_df_1_gram_solver() {
    exact_parity("lee_bow_mindf1", &lee_input(1), "solver = \"gram\"", 10);
}

/// The Lanczos solver converges to scikit-learn's exact results: on lee_docs (300 documents: 300-dimensional
/// Krylov side, restarts included) and on digits (64 features: small enough to be solved whole).
#[test]
fn lee_and_digits_lanczos_solver() {
    exact_parity("lee_bow_mindf1", &lee_input(1), "solver = \"lanczos\"", 10);
    exact_parity("digits_raw", &digits_input(), "solver = \"lanczos\"", 10);
}

#[test]
fn lee_min_df_2_auto_picks_gram() {
    let job = run_pca(&lee_input(2), "n_components = 10");
    let run: serde_json::Value =
        serde_json::from_slice(&std::fs::read(job.out().join("latest/run.json")).expect("run.json")).expect("json");
    assert_eq!(run["details"]["pca"]["solver"], "gram");
    exact_parity("lee_bow_mindf2", &lee_input(2), "", 10);
}

#[test]
fn digits_raw_covariance_solver() {
    exact_parity("digits_raw", &digits_input(), "solver = \"covariance\"", 10);
}

#[test]
fn digits_standardized() {
    exact_parity("digits_std", &digits_input(), "standardize = true", 10);
}

#[test]
fn fastfood_nonull_raw_and_standardized() {
    exact_parity("fastfood_nonull_raw", &fastfood_input(false), "", 9);
    exact_parity("fastfood_nonull_std", &fastfood_input(false), "standardize = true", 9);
}

#[test]
fn fastfood_complete_raw_and_standardized() {
    exact_parity("fastfood_complete_raw", &fastfood_input(true), "", 10);
    exact_parity("fastfood_complete_std", &fastfood_input(true), "standardize = true", 10);
}

/// The randomized solver's summed EVR is at least as close to the exact one as scikit-learn's randomized result.
fn randomized_parity(dataset: &str, input: &str, k: i64) {
    let job = run_pca(input, &format!("n_components = {k}\nsolver = \"randomized\""));
    let reference = Reference::load(dataset);
    let exact: f64 = reference.per_component("full", k, "explained_variance_ratio").iter().sum();
    let sk: f64 = reference.per_component("randomized", k, "explained_variance_ratio").iter().sum();
    let ours: f64 = pca_metric(&job, "explained_variance_ratio").iter().sum();
    let allowed = (sk - exact).abs() + 1e-6;
    assert!(
        (ours - exact).abs() <= allowed,
        "{dataset} k={k}: summed EVR {ours} is {} from exact {exact}; scikit-learn's randomized is {}",
        (ours - exact).abs(),
        (sk - exact).abs()
    );
}

#[test]
fn randomized_lee_k10_and_k50() {
    randomized_parity("lee_bow_mindf1", &lee_input(1), 10);
    randomized_parity("lee_bow_mindf1", &lee_input(1), 50);
}

#[test]
fn randomized_digits_k10() {
    randomized_parity("digits_raw", &digits_input(), 10);
}

#[test]
fn variance_target_keeps_the_fewest_components_reaching_it() {
    // digits raw: cumulative EVR passes 0.5 at the 5th component (scikit-learn's rule: first cumsum > target).
    let job = run_pca(&digits_input(), "n_components = 0.5");
    let reference = Reference::load("digits_raw");
    let evr = reference.per_component("full", 50, "explained_variance_ratio");
    let mut cum = 0.0;
    let want = evr.iter().position(|r| {
        cum += r;
        cum > 0.5
    });
    let got = pca_metric(&job, "explained_variance_ratio");
    assert_eq!(Some(got.len() - 1), want);
}

#[test]
fn textbook_three_documents_two_components() {
    // scikit-learn 1.9.1: PCA(n_components=2).fit([[1,0,1,0,1],[1,1,0,0,1],[0,1,1,1,0]]).
    let job = Job::new()
        .file("x.csv", "a,b,c,d,e\n1,0,1,0,1\n1,1,0,0,1\n0,1,1,1,0\n")
        .toml("[job]\nname='t'\nbackend='cpu'\n[input]\npath='x.csv'\nlayout='numeric'\n[pca]\nn_components=2\n[output]\ndir='out'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_close(&pca_metric(&job, "explained_variance"), &[1.1666666666666665, 0.5], 1e-12, "explained_variance");
    assert_close(&pca_metric(&job, "explained_variance_ratio"), &[0.7, 0.3], 1e-12, "EVR");
    assert_close(&pca_metric(&job, "singular_value"), &[1.5275252316519465, 1.0], 1e-12, "singular values");
    let comps = job.latest_parquet("pca_components.parquet");
    let l = f64s(&comps, "loading");
    let s = 0.5345224838248488;
    let want = [[-s, s / 2.0, s / 2.0, s, -s], [0.0, -0.7071067811865475, 0.7071067811865477, 0.0, 0.0]];
    for c in 0..2 {
        // The largest |loading| ties within rounding here, so compare up to sign.
        let sign = if (l[c * 5 + 1] > 0.0) == (want[c][1] > 0.0) { 1.0 } else { -1.0 };
        for j in 0..5 {
            assert!((sign * l[c * 5 + j] - want[c][j]).abs() < 1e-12, "component {c}: {:?}", &l[c * 5..c * 5 + 5]);
        }
    }
}

#[test]
fn the_summary_says_how_many_components_reach_half_80_and_90_percent_of_the_variance() {
    // Digits, all 64 components: every share is reached; each count is the first component where the cumulative
    // explained-variance ratio (scikit-learn-equal, tested above) gets there.
    let job = Job::new().toml(&format!(
        "[job]\nname = \"pca\"\nbackend = \"cpu\"\nseed = 0\n{}\n[pca]\nn_components = 64\n[output]\ndir = \"out\"\n",
        digits_input()
    ));
    let r = job.run_loud(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cum = pca_metric(&job, "cumulative_explained_variance_ratio");
    let m = job.latest_parquet("metrics.parquet");
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    let get = |k: &str| (0..m.height()).find(|&i| s[i] == "pca" && n[i] == k).map(|i| v[i]);
    let mut counts = Vec::new();
    for (share, name) in [(0.5, "50pct"), (0.8, "80pct"), (0.9, "90pct")] {
        let want = cum.iter().position(|&c| c >= share).expect("reached with every component") + 1;
        assert_eq!(get(&format!("components_for_{name}_variance")), Some(want as f64), "{name}");
        assert!(r.stderr.contains(&format!("{:.0} %: {want}", share * 100.0)), "{}", r.stderr);
        counts.push(want);
    }
    assert!(counts[0] < counts[1] && counts[1] < counts[2], "{counts:?}");
    assert!(r.stderr.contains("vectors: pca 64"), "{}", r.stderr);
    // Two components do not reach 50 %: no metric, and the summary says "> 2".
    let few = run_pca(&digits_input(), "n_components = 2");
    let m = few.latest_parquet("metrics.parquet");
    assert!(!strs(&m, "metric").iter().any(|k| k.starts_with("components_for_")));
    let r = few.run_loud(&[]);
    assert!(r.stderr.contains("50 %: > 2"), "{}", r.stderr);
}

#[test]
fn bench_pca_fits_on_the_gpu_backend_with_the_cpus_explained_variance() {
    // `bench pca --backend gpu` runs the fit through the wgpu backend (the H200 device script's users × items step);
    // here the Lee matrix on whatever adapter there is, its summed EVR equal to the CPU backend's per solver.
    if gpu_backend().is_none() {
        return;
    }
    let root = repo();
    let lee = root.join("pipelines/data/lee_docs.parquet");
    let evr = |backend: &str| -> Vec<(String, String, f64)> {
        let args = ["bench", "pca", "--only", "lee", "--repeats", "1", "--python", "none", "--backend", backend];
        let r = embjob(&[&args[..], &["--lee", lee.to_str().expect("utf-8")]].concat(), &root);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout
            .lines()
            .filter(|l| l.starts_with("| lee_docs"))
            .map(|l| {
                let c: Vec<&str> = l.split('|').map(str::trim).collect();
                (c[2].to_owned(), c[3].to_owned(), c[6].parse().expect("evr"))
            })
            .collect()
    };
    let (cpu, gpu) = (evr("cpu"), evr("gpu"));
    assert_eq!(cpu.len(), 2, "{cpu:?}");
    assert_eq!(gpu.len(), 2, "{gpu:?}");
    for ((ct, cs, ce), (gt, gs, ge)) in cpu.iter().zip(&gpu) {
        assert_eq!(ct, "embjob (cpu)");
        assert!(gt.starts_with("embjob (") && gt != "embjob (cpu)", "the GPU's adapter names the tool: {gt}");
        assert_eq!(cs, gs, "the same solver on both backends");
        assert!((ce - ge).abs() < 1e-5, "{cs}: summed EVR {ce} on the CPU, {ge} on the GPU");
    }
}
