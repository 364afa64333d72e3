//! A newcomer's first run: on a headless machine with Mesa's Vulkan drivers installed (as CI has), the README's
//! main command prints nothing on stderr that is not embjob's own line. (Mesa's device-select layer would print
//! `error: XDG_RUNTIME_DIR is invalid or not set in the environment.` once per Vulkan instance; embjob turns the
//! layer off before its first instance unless the user set NODEVICE_SELECT or MESA_VK_DEVICE_SELECT.)

use std::process::Command;

use crate::support::*;

/// The labels of embjob's own stderr lines: its stages' summaries, the closing lines and notices.
const OWN: &[&str] = &[
    "ingest",
    "bow",
    "pca",
    "train",
    "eval",
    "model",
    "contextual",
    "eval_documents",
    "write",
    "vectors",
    "done",
    "notice",
];

/// Runs the food job as a newcomer does: the environment as a fresh shell has it on a server (no
/// NODEVICE_SELECT, no XDG_RUNTIME_DIR), progress bars off (stderr is not a terminal).
fn first_run(backend: &str) -> Outcome {
    let out = tempfile::tempdir().expect("tmp");
    let run = Command::new(env!("CARGO_BIN_EXE_embjob"))
        .args(["run", "pipelines/food.toml", "--backend", backend, "--output", out.path().to_str().expect("utf-8")])
        .current_dir(repo())
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run embjob");
    Outcome {
        code: run.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
    }
}

#[test]
fn the_food_job_prints_only_embjobs_own_lines_where_mesa_is_installed() {
    if !std::path::Path::new("/usr/share/vulkan/icd.d").is_dir() {
        skip_unless_required("EMBJOB_REQUIRE_GPU", "Mesa's Vulkan drivers are not installed");
        return;
    }
    // auto (the README's command: the CPU with a one-line notice where only a software adapter exists), and the
    // GPU path wherever an adapter exists.
    let backends: &[&str] = if crate::support::gpu_backend().is_some() { &["auto", "gpu"] } else { &["auto"] };
    for backend in backends {
        let r = first_run(backend);
        assert_eq!(r.code, 0, "{backend}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{backend}: the run says what it did");
        for line in r.stderr.lines() {
            let label = line.trim_start().split(':').next().unwrap_or_default();
            assert!(OWN.contains(&label), "{backend}: a line on stderr that is not embjob's: {line:?}\n{}", r.stderr);
        }
        let notices = r.stderr.lines().filter(|l| l.trim_start().starts_with("notice: backend:")).count();
        assert!(notices <= 1, "{backend}: the backend's notice is one line\n{}", r.stderr);
    }
}
