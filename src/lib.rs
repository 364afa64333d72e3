//! embjob turns tables into embeddings: it reads Parquet or CSV with polars, builds bag-of-words matrices, runs
//! covariance / PCA, and writes everything as Parquet. One TOML file describes a job; see the README for the
//! config reference, the output schemas and the architecture.
//!
//! The library does the work; the `embjob` binary is a thin command-line edge over [`run`] and [`validate`].

pub mod backend;
pub mod data;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod job;
pub mod linalg;
pub mod pca;
pub mod plan;
pub mod recommend;
pub mod runtime;
pub mod stages;
pub mod text;
pub mod tools;
pub mod view;

pub use error::{Error, Result};
pub use job::{merge, run, run_shard, validate, RunSummary};
pub use plan::{Overrides, Plan};
pub use runtime::progress::{Reporter, Silent};
