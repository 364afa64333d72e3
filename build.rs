//! Records the versions of the crates that compute embjob's results, read from Cargo.lock, for run.json.

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("polars", "EMBJOB_VERSION_POLARS"),
        ("wgpu", "EMBJOB_VERSION_WGPU"),
        ("faer", "EMBJOB_VERSION_FAER"),
        ("matrixmultiply", "EMBJOB_VERSION_MATRIXMULTIPLY"),
        ("regex", "EMBJOB_VERSION_REGEX"),
        ("fancy-regex", "EMBJOB_VERSION_FANCY_REGEX"),
    ] {
        let needle = format!("name = \"{krate}\"\nversion = \"");
        let version =
            lock.find(&needle).and_then(|at| lock[at + needle.len()..].split('"').next()).unwrap_or("unknown");
        println!("cargo:rustc-env={var}={version}");
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=EMBJOB_RUSTC_VERSION={version}");
}
