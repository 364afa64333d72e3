//! Plots (`plots/*.png`) and `report.html`: drawn for every run, deterministic, and the page renders in a real
//! browser (headless Chromium) with every image decoded and no script error. With `EMBJOB_REQUIRE_BROWSER=1` (CI) a
//! missing Chromium fails the browser test instead of skipping it.

use std::path::PathBuf;

use crate::support::*;

/// Chromium's binary, if installed.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| PathBuf::from(d).join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        skip_unless_required("EMBJOB_REQUIRE_BROWSER", "no chromium on PATH (apt-get install chromium)");
    }
    found
}

fn food_run() -> tempfile::TempDir {
    let out = tempfile::tempdir().expect("tmp");
    let r = embjob(
        &["run", "pipelines/food.toml", "--backend", "cpu", "--quiet", "--output", out.path().to_str().expect("utf-8")],
        &repo(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    out
}

#[test]
fn the_food_report_renders_in_headless_chromium_with_every_image_decoded() {
    let out = food_run();
    let latest = out.path().join("latest");
    let plots: Vec<String> = std::fs::read_dir(latest.join("plots"))
        .expect("plots")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for want in ["items.png", "pca_loadings.png", "scree.png", "training.png"] {
        assert!(plots.iter().any(|p| p == want), "{want} missing: {plots:?}");
    }
    let html = std::fs::read_to_string(latest.join("report.html")).expect("report");
    assert!(!html.contains("http://") && !html.contains("https://"), "the report must not need the network");
    assert_eq!(html.matches("data:image/png;base64,").count(), plots.len());
    for want in ["Stages", "Model against popularity", "loo_recall@10", "Efficiency"] {
        assert!(html.contains(want), "{want} missing from the report");
    }
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium on PATH");
        return;
    };
    let profile = tempfile::tempdir().expect("profile");
    let url = format!("file://{}", latest.join("report.html").display());
    let dump = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=10000"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dump.stderr));
    let want = format!("data-images=\"{0}/{0}\"", plots.len());
    assert!(dom.contains(&want), "not every image decoded ({want}):\n{}", &dom[..dom.len().min(600)]);
    assert!(!dom.contains("data-errors"), "a script error:\n{}", &dom[..dom.len().min(600)]);
}

#[test]
fn plots_are_the_same_bytes_for_the_same_run_and_can_be_turned_off() {
    let (a, b) = (food_run(), food_run());
    for name in ["items.png", "scree.png", "training.png", "pca_loadings.png"] {
        let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("latest/plots").join(name)).expect("png");
        let png = read(&a);
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name} is a PNG");
        assert!(png == read(&b), "{name} differs between two runs of the same job");
    }
    let job = long_job("plots = false\n");
    let r = job.run(&[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let latest = job.out().join("latest");
    assert!(!latest.join("plots").exists() && !latest.join("report.html").exists());
}
