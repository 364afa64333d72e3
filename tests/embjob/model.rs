//! The embedding model end to end: the split equals the PyTorch peer's example for example, MovieLens results track
//! the peer, the food model recovers the planted cuisines, runs repeat bit for bit, and early stopping works.

use embjob::data::dataset::Dataset;
use embjob::plan::config::Format;
use embjob::plan::{InputColumns, InputSpec};
use embjob::recommend::train;
use polars::prelude::*;

use crate::support::*;

fn movielens() -> embjob::data::dataset::Interactions {
    let input = InputSpec::file(
        repo().join("pipelines/data/movielens_favorites.parquet"),
        Format::Parquet,
        InputColumns::List { user: "user_id".into(), items: "items".into() },
        b',',
    );
    match embjob::data::read_input(&input).expect("read movielens") {
        Dataset::Interactions(i) => i,
        _ => panic!("list layout reads as interactions"),
    }
}

fn lists_i64(df: &DataFrame, col: &str) -> Vec<Vec<i64>> {
    let s = df.column(col).expect("column").as_materialized_series().clone();
    s.list()
        .expect("list")
        .amortized_iter()
        .map(|l| {
            let l = l.expect("no null lists");
            let c = l.as_ref().cast(&DataType::Int64).expect("cast");
            c.i64().expect("i64").iter().map(|v| v.expect("no nulls")).collect()
        })
        .collect()
}

fn movielens_plan(extra: &str) -> embjob::recommend::train::ModelParams {
    let toml = format!(
        "[job]\nname='m'\n[input]\npath={:?}\nlayout='list'\nuser='user_id'\nitem='items'\n[model]\nembedding_dim=32\nhidden_units=64\n{extra}\n",
        repo().join("pipelines/data/movielens_favorites.parquet")
    );
    let config = embjob::plan::config::Config::from_toml(&toml, std::path::Path::new("m.toml")).expect("config");
    embjob::job::load::plan_from(config, std::path::Path::new("m.toml"), &Default::default())
        .expect("plan")
        .model
        .expect("model")
        .params
}

#[test]
fn split_equals_the_peer_split_example_for_example() {
    let data = movielens();
    let plan = movielens_plan("");
    let (lists, dropped) = train::distinct_lists(&data);
    assert_eq!(dropped, 0);
    let split = train::make_split(&data, &lists, &plan);
    let label = |i: u32| data.items[i as usize].parse::<i64>().expect("movieId");
    let user = |u: u32| data.user_numbers.as_ref().expect("integer users")[u as usize];

    let want = read_parquet(&fixture("split_movielens_favorites_train_examples.parquet"));
    let (wu, wi, wt) = (i64s(&want, "user_id"), lists_i64(&want, "input_items"), i64s(&want, "target_item"));
    assert_eq!(split.train.len(), 45_637);
    assert_eq!(split.train.len(), wu.len());
    for (n, e) in split.train.iter().enumerate() {
        let got = (user(e.user), e.inputs.iter().map(|&i| label(i)).collect::<Vec<_>>(), label(e.target));
        assert_eq!(got, (wu[n], wi[n].clone(), wt[n]), "train example {n}");
    }

    let want = read_parquet(&fixture("split_movielens_favorites_test.parquet"));
    let (wu, wi, wt) = (i64s(&want, "user_id"), lists_i64(&want, "input_items"), i64s(&want, "target_item"));
    assert_eq!(split.test_last.len(), 66);
    let mut got: Vec<_> = split
        .test_last
        .iter()
        .map(|e| (user(e.user), e.inputs.iter().map(|&i| label(i)).collect::<Vec<_>>(), label(e.target)))
        .collect();
    let mut expected: Vec<_> = (0..wu.len()).map(|n| (wu[n], wi[n].clone(), wt[n])).collect();
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    assert_eq!(split.test_loo.len(), 5_898, "every favourite of every test user");
}

fn eval_metric(job_out: &std::path::Path, stage: &str, metric: &str) -> f64 {
    let m = read_parquet(&job_out.join("latest/metrics.parquet"));
    let (s, n, v) = (strs(&m, "stage"), strs(&m, "metric"), f64s(&m, "value"));
    (0..m.height())
        .find(|&r| s[r] == stage && n[r] == metric)
        .map(|r| v[r])
        .unwrap_or_else(|| panic!("{stage}/{metric}"))
}

/// CI's guard of the parity with PyTorch (the full 5-seed × 3-epoch comparison is in the issue notes): one epoch
/// of the peer's model must beat popularity on the LOO protocol, and popularity must equal the peer's exactly.
#[test]
fn movielens_one_epoch_beats_popularity_and_popularity_equals_the_peer() {
    let job = Job::new().toml(&format!(
        "[job]\nname='m'\nseed=0\nbackend='cpu'\n[input]\npath={:?}\nlayout='list'\nuser='user_id'\nitem='items'\n\
         [model]\nembedding_dim=32\nhidden_units=64\npooling='mean'\n[train]\nepochs=1\n[output]\ndir='out'\n",
        repo().join("pipelines/data/movielens_favorites.parquet")
    ));
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = job.out();
    // The peer's popularity baseline (shared/peers/README.md), exactly.
    assert!((eval_metric(&out, "eval_popularity", "loo_recall@10") - 0.0656).abs() < 5e-5);
    assert!((eval_metric(&out, "eval_popularity", "last_recall@10") - 0.0455).abs() < 5e-5);
    assert!((eval_metric(&out, "eval_popularity", "loo_mrr") - 0.0340).abs() < 5e-5);
    let model = eval_metric(&out, "eval_model", "loo_recall@10");
    assert!(model > 0.0656, "one epoch: LOO recall@10 {model} is not above popularity 0.0656");
    assert!(model < 0.0736 + 0.015, "LOO recall@10 {model} is implausibly far above the peer's 0.0736");
}

fn food_job(epochs: u32, extra_train: &str) -> Job {
    Job::new()
        .copy(&repo().join("pipelines/data/food_favorites.csv"), "food.csv")
        .copy(&repo().join("pipelines/data/food_items.csv"), "items.csv")
        .copy(&repo().join("pipelines/data/food_pairs.csv"), "pairs.csv")
        .toml(&format!(
            "[job]\nname='food'\nseed=42\nbackend='cpu'\n[input]\npath='food.csv'\nlayout='long'\nuser='user_id'\n\
             item='item'\norder='rank'\n[model]\nembedding_dim=3\nhidden_units=16\n[train]\nepochs={epochs}\nbatch_size=64\n{extra_train}\n\
             [eval]\nk=[5]\nneighbors=5\nlabels='items.csv'\nlabels_category='cuisine'\npairs='pairs.csv'\n[output]\ndir='out'\n"
        ))
}

#[test]
fn food_neighbours_come_from_their_own_cuisine() {
    let job = food_job(10, "");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let labels = read_csv(&repo().join("pipelines/data/food_items.csv"));
    let cuisine: std::collections::HashMap<String, String> =
        strs(&labels, "item").into_iter().zip(strs(&labels, "cuisine")).collect();
    let nb = job.latest_parquet("neighbors.parquet");
    let (items, neighbours) = (strs(&nb, "item"), strs(&nb, "neighbor"));
    assert_eq!(items.len(), 240 * 5);
    let same = items.iter().zip(&neighbours).filter(|(a, b)| cuisine[*a] == cuisine[*b]).count();
    let share = same as f64 / items.len() as f64;
    // 8 cuisines: chance is 1/8.
    assert!(share > 0.8, "only {share:.3} of the food's nearest neighbours share its cuisine");
    let agreement = eval_metric(&job.out(), "similarity", "label_agreement");
    assert!((agreement - share).abs() < 1e-9, "label_agreement metric {agreement} vs {share}");
    // And the model ranks held-out favourites far better than popularity does.
    let (model, popularity) = (
        eval_metric(&job.out(), "eval_model", "loo_recall@5"),
        eval_metric(&job.out(), "eval_popularity", "loo_recall@5"),
    );
    assert!(model > 2.0 * popularity, "recall@5 {model} vs popularity {popularity}");
    // Cosines of the embeddings follow the planted pair scores.
    let rho = eval_metric(&job.out(), "similarity", "spearman");
    // Random embeddings give about 0; the course axis is weaker than the cuisine axis in d = 3.
    assert!(rho > 0.25, "Spearman's rho against the planted pair scores is only {rho}");
    assert_eq!(eval_metric(&job.out(), "similarity", "pairs_used"), 600.0);
}

#[test]
fn same_seed_same_embeddings_and_metrics() {
    let a = food_job(2, "");
    let b = food_job(2, "");
    for j in [&a, &b] {
        let r = j.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    for f in ["embeddings.parquet", "neighbors.parquet"] {
        let (x, y) = (a.latest_parquet(f), b.latest_parquet(f));
        assert!(x.equals(&y), "{f} differs between two runs with one seed");
    }
    assert_eq!(result_metrics(&a), result_metrics(&b));
}

#[test]
fn early_stopping_keeps_the_best_epoch() {
    // The food model's held-out loss bottoms out within a few epochs at this learning rate.
    let job = food_job(40, "learning_rate = 0.05\npatience = 2");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let epochs = eval_metric(&job.out(), "train", "epochs");
    let best = eval_metric(&job.out(), "train", "best_epoch");
    assert!(epochs < 40.0, "training ran all {epochs} epochs");
    assert_eq!(best, epochs - 2.0, "stopped {epochs} epochs in, 2 after the best ({best})");
}

/// A small long-layout model job whose CSV has a weight column.
fn weighted_job(weights: &str, use_weight: bool) -> Job {
    let mut csv = String::from("user,item,w\n");
    let mut rng = embjob::linalg::rng::SplitMix::new(3);
    for u in 1..=60 {
        let mut mine: Vec<usize> = Vec::new();
        while mine.len() < 5 {
            let i = rng.below(12);
            if !mine.contains(&i) {
                mine.push(i);
            }
        }
        for (n, i) in mine.iter().enumerate() {
            let w = match weights {
                "ones" => "1".to_owned(),
                "varied" => format!("{}", 1 + (u + n) % 5),
                other => other.to_owned(),
            };
            csv.push_str(&format!("{u},item{i},{w}\n"));
        }
    }
    let weight_key = if use_weight { "weight = 'w'\n" } else { "" };
    Job::new().file("d.csv", csv).toml(&format!(
        "[job]\nname='w'\nseed=5\nbackend='cpu'\n[input]\npath='d.csv'\nlayout='long'\n{weight_key}\
         [model]\nembedding_dim=4\nhidden_units=8\n[train]\nepochs=3\nbatch_size=16\n[eval]\nk=[3]\n[output]\ndir='out'\n"
    ))
}

#[test]
fn weights_of_one_pool_exactly_like_no_weights() {
    let (plain, ones) = (weighted_job("ones", false), weighted_job("ones", true));
    for j in [&plain, &ones] {
        let r = j.run(&[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    assert!(plain.latest_parquet("embeddings.parquet").equals(&ones.latest_parquet("embeddings.parquet")));
    let varied = weighted_job("varied", true);
    let r = varied.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !plain.latest_parquet("embeddings.parquet").equals(&varied.latest_parquet("embeddings.parquet")),
        "unequal weights must change the model"
    );
}

#[test]
fn a_non_positive_weight_is_an_input_error() {
    let job = weighted_job("0", true);
    let r = job.run(&[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("column 'w'") && r.stderr.contains("not positive"), "{}", r.stderr);
}

/// The food job with the sampled softmax (40 of 240 items drawn per batch of 64) on `backend`.
fn sampled_food_job(backend: &str, sampler: &str) -> Job {
    food_job(10, "")
        .edit_toml(
            "hidden_units=16\n",
            &format!("hidden_units=16\nloss='sampled_softmax'\nnegatives=40\nsampler='{sampler}'\n"),
        )
        .edit_toml("backend='cpu'", &format!("backend='{backend}'"))
}

#[test]
fn the_sampled_softmax_learns_the_food_cuisines_on_every_backend() {
    let mut backends = vec!["cpu"];
    if crate::support::gpu_backend().is_some() {
        backends.push("gpu");
    }
    for (backend, sampler) in backends.iter().flat_map(|b| [(*b, "frequency"), (*b, "uniform")]) {
        if backend == "gpu" && sampler == "uniform" {
            continue;
        }
        let job = sampled_food_job(backend, sampler);
        let r = job.run(&[]);
        assert_eq!(r.code, 0, "{backend}: {}", r.stderr);
        let out = job.out();
        assert_eq!(eval_metric(&out, "train", "negatives"), 40.0);
        let (model, popularity) =
            (eval_metric(&out, "eval_model", "loo_recall@5"), eval_metric(&out, "eval_popularity", "loo_recall@5"));
        assert!(model > 2.0 * popularity, "{backend} {sampler}: recall@5 {model} vs popularity {popularity}");
        let agreement = eval_metric(&out, "similarity", "label_agreement");
        assert!(agreement > 0.7, "{backend} {sampler}: only {agreement} of the neighbours share their cuisine");
        // The loss is the sampled one: finite and below the full softmax's log(240) at random.
        let loss = eval_metric(&out, "train", "loss");
        assert!(loss.is_finite() && loss < (240f64).ln(), "{backend}: loss {loss}");
    }
    // One seed, one result.
    let (a, b) = (sampled_food_job("cpu", "frequency"), sampled_food_job("cpu", "frequency"));
    for j in [&a, &b] {
        assert_eq!(j.run(&[]).code, 0);
    }
    assert!(a.latest_parquet("embeddings.parquet").equals(&b.latest_parquet("embeddings.parquet")));
}

#[test]
fn sampled_softmax_settings_are_checked_with_their_keys() {
    let cases = [
        ("hidden_units=16\n", "hidden_units=16\nnegatives=10\n", "model.negatives"),
        ("hidden_units=16\n", "hidden_units=16\nsampler='uniform'\n", "model.sampler"),
        ("hidden_units=16\n", "hidden_units=16\nloss='sampled_softmax'\nnegatives=0\n", "model.negatives"),
        ("hidden_units=16\n", "hidden_units=16\nloss='sampled'\n", "loss"),
    ];
    for (from, to, key) in cases {
        let job = food_job(1, "").edit_toml(from, to);
        let r = job.run(&[]);
        assert_eq!(r.code, 2, "{to}: {}", r.stderr);
        assert!(r.stderr.contains(key), "{key} not in: {}", r.stderr);
        job.assert_no_run();
    }
    let job =
        food_job(1, "optimizer='sgd'").edit_toml("hidden_units=16\n", "hidden_units=16\nloss='sampled_softmax'\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("train.optimizer") && r.stderr.contains("lazy Adam"), "{}", r.stderr);
}

#[test]
fn a_generated_catalogue_trains_with_the_sampled_softmax_and_the_benchmark_runs() {
    let job = Job::new().toml(
        "[job]\nname='c'\nbackend='cpu'\n[input]\npath='cat.parquet'\nlayout='long'\nuser='user_id'\nitem='item'\n\
         order='rank'\n[model]\nembedding_dim=8\nhidden_units=0\nloss='sampled_softmax'\nnegatives=50\n[train]\n\
         epochs=2\nbatch_size=32\n[eval]\nk=[10]\nneighbors=3\n[output]\ndir='out'\nplots=false\nhandoff=false\n",
    );
    let out = job.path("cat.parquet");
    let args = ["gen-catalogue", "--items", "400", "--users", "300", "--per-user", "6", "--out"];
    let r = embjob(&[&args[..], &[out.to_str().expect("utf-8")]].concat(), job.dir.path());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cat = read_parquet(&out);
    assert_eq!(cat.height(), 300 * 6);
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(eval_metric(&job.out(), "train", "negatives"), 50.0);
    // The same seed writes the same catalogue; a catalogue of one item is refused.
    let again = job.path("again.parquet");
    let r = embjob(&[&args[..], &[again.to_str().expect("utf-8")]].concat(), job.dir.path());
    assert_eq!(r.code, 0);
    assert_eq!(std::fs::read(&out).expect("cat"), std::fs::read(&again).expect("again"));
    let r = embjob(&["gen-catalogue", "--items", "1", "--out", "x.parquet"], job.dir.path());
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("--items must be at least 2"), "{}", r.stderr);
    let r = embjob(
        &[
            "bench",
            "catalogue",
            "--items",
            "300,3000",
            "--users",
            "200",
            "--steps",
            "2",
            "--repeats",
            "1",
            "--eval-examples",
            "20",
        ],
        job.dir.path(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("| 3000 | sampled_softmax (1000 negatives) |"), "{}", r.stdout);
}
