//! embjob turns tables into embeddings: it reads Parquet or CSV with polars, builds bag-of-words matrices, runs
//! covariance / PCA, and writes everything as Parquet. One TOML file describes a job; see the README for the
//! config reference, the output schemas and the architecture.
//!
//! The library does the work; the `embjob` binary is a thin command-line edge over [`run`] and [`validate`].

pub mod backend;
pub mod bench;
pub mod bow;
pub mod catalogue;
pub mod config;
pub mod data;
pub mod dataset;
pub mod dense;
pub mod doc_eval;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod foodgen;
pub mod handoff;
pub mod html;
pub mod inspect;
pub mod interrupt;
pub mod krylov;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod outputs;
pub mod pca;
pub mod pipeline;
pub mod plan;
pub mod plots;
pub mod report;
pub mod rng;
pub mod run_dir;
pub mod run_record;
pub mod sampling;
pub mod senses;
pub mod shard;
pub mod sparse;
pub mod split;
pub mod stages;
pub mod table;
pub mod token_pattern;
pub mod train;

use std::path::Path;

pub use error::{Error, Result};
pub use pipeline::RunSummary;
pub use plan::{Overrides, Plan};
pub use report::{Reporter, Silent};

/// Loads and validates a pipeline file, then runs it.
pub fn run(config_file: &Path, overrides: &Overrides, reporter: &dyn Reporter) -> Result<RunSummary> {
    let plan = Plan::load(config_file, overrides)?;
    pipeline::run(&plan, reporter)
}

/// Runs one shard of a text job (`embjob run --shard i/N`): its share of the input, under `<output.dir>/shards/`.
pub fn run_shard(
    config_file: &Path,
    overrides: &Overrides,
    spec: shard::ShardSpec,
    reporter: &dyn Reporter,
) -> Result<shard::ShardSummary> {
    let plan = Plan::load(config_file, overrides)?;
    shard::run_shard(&plan, spec, reporter)
}

/// Merges a complete set of shards (`embjob merge`): the whole-data stages, then a normal run and `latest`.
pub fn merge(config_file: &Path, overrides: &Overrides, reporter: &dyn Reporter) -> Result<RunSummary> {
    let plan = Plan::load(config_file, overrides)?;
    let shards = shard::ShardSet::open(&plan)?;
    pipeline::run_from(&plan, Some(&shards), reporter)
}

/// Loads and validates a pipeline file without running it.
pub fn validate(config_file: &Path, overrides: &Overrides) -> Result<Plan> {
    Plan::load(config_file, overrides)
}
