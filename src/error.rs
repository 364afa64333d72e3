//! The one error type of the library. Every variant says where the problem is (file, key, column, line) and maps to
//! one of the documented exit codes.

use std::path::PathBuf;

/// Result with the library's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes of the `embjob` binary (documented in the README).
pub mod exit_code {
    /// The run finished and its outputs are visible under `latest`.
    pub const OK: i32 = 0;
    /// A bug or an environment failure embjob could not attribute to the config or the data (e.g. a write error).
    pub const INTERNAL: i32 = 1;
    /// The config file or the command line is wrong.
    pub const CONFIG: i32 = 2;
    /// The input data cannot be used.
    pub const INPUT: i32 = 3;
    /// The GPU backend was asked for and is not usable.
    pub const GPU: i32 = 4;
    /// Stopped by SIGINT (Ctrl-C): nothing of the run is visible.
    pub const SIGINT: i32 = 130;
    /// Stopped by SIGTERM: nothing of the run is visible.
    pub const SIGTERM: i32 = 143;
}

/// Which signal asked a run to stop (`runtime::interrupt` turns SIGINT / SIGTERM into a stop request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

/// Everything that can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TOML that does not parse, or a key whose value has the wrong type.
    #[error("{file}:{line}:{column}: {}{message}", key_prefix(key))]
    ConfigSyntax { file: PathBuf, line: usize, column: usize, key: String, message: String },

    /// Problems found while turning the config into a plan; each names its key path.
    #[error("{file}: invalid config:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    ConfigInvalid { file: PathBuf, problems: Vec<ConfigProblem> },

    /// The config file itself cannot be read.
    #[error("{file}: cannot read the config file: {source}")]
    ConfigRead { file: PathBuf, source: std::io::Error },

    /// Input data that cannot be used; names the file and, where known, the column.
    #[error("{file}{}: {message}", column.as_ref().map(|c| format!(": column '{c}'")).unwrap_or_default())]
    Input { file: PathBuf, column: Option<String>, message: String },

    /// A stage cannot compute on this input (e.g. the vocabulary is empty after pruning).
    #[error("{stage}: {message}")]
    Stage { stage: &'static str, message: String },

    /// Writing outputs failed; nothing of this run became visible.
    #[error("{}: {action}: {source}", path.display())]
    Output { path: PathBuf, action: &'static str, source: std::io::Error },

    /// The GPU backend is not usable.
    #[error("gpu: {0}")]
    Gpu(String),

    /// Stopped by a signal; the run's staging folder was removed.
    #[error("stopped by {}: nothing of this run was kept", match .0 { Signal::Interrupt => "SIGINT", Signal::Terminate => "SIGTERM" })]
    Interrupted(Signal),

    /// An invariant broke: a bug in embjob.
    #[error("internal error: {0}")]
    Internal(String),
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!("{key}: ")
    }
}

/// One problem in a config, with the dotted key path it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `bow.min_df`.
    pub key: String,
    /// What is wrong, in words.
    pub message: String,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Error {
    /// The exit code the binary uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ConfigSyntax { .. } | Error::ConfigInvalid { .. } | Error::ConfigRead { .. } => exit_code::CONFIG,
            Error::Input { .. } | Error::Stage { .. } => exit_code::INPUT,
            Error::Gpu(_) => exit_code::GPU,
            Error::Output { .. } | Error::Internal(_) => exit_code::INTERNAL,
            Error::Interrupted(Signal::Interrupt) => exit_code::SIGINT,
            Error::Interrupted(Signal::Terminate) => exit_code::SIGTERM,
        }
    }

    /// An input error about a file and one of its columns.
    pub fn input(file: impl Into<PathBuf>, column: Option<&str>, message: impl Into<String>) -> Self {
        Error::Input { file: file.into(), column: column.map(str::to_owned), message: message.into() }
    }

    /// An output error about a path.
    pub fn output(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        Error::Output { path: path.into(), action, source }
    }
}
