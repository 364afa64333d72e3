//! A job end to end: the stage loop, the staging folder and its atomic switch, run.json, sharded runs.

pub mod load;
pub mod pipeline;
pub mod run_dir;
pub mod run_record;
pub mod shard;

use std::path::Path;

pub use pipeline::RunSummary;

use crate::error::Result;
use crate::plan::{Overrides, Plan};
use crate::runtime::progress::Reporter;

/// Loads and validates a pipeline file, then runs it.
pub fn run(config_file: &Path, overrides: &Overrides, reporter: &dyn Reporter) -> Result<RunSummary> {
    let plan = load::load(config_file, overrides)?;
    pipeline::run(&plan, reporter)
}

/// Runs one shard of a text job (`embjob run --shard i/N`): its share of the input, under `<output.dir>/shards/`.
pub fn run_shard(
    config_file: &Path,
    overrides: &Overrides,
    spec: shard::ShardSpec,
    reporter: &dyn Reporter,
) -> Result<shard::ShardSummary> {
    let plan = load::load(config_file, overrides)?;
    shard::run_shard(&plan, spec, reporter)
}

/// Merges a complete set of shards (`embjob merge`): the whole-data stages, then a normal run and `latest`.
pub fn merge(config_file: &Path, overrides: &Overrides, reporter: &dyn Reporter) -> Result<RunSummary> {
    let plan = load::load(config_file, overrides)?;
    let shards = shard::ShardSet::open(&plan)?;
    pipeline::run_from(&plan, Some(&shards), reporter)
}

/// Loads and validates a pipeline file without running it.
pub fn validate(config_file: &Path, overrides: &Overrides) -> Result<Plan> {
    load::load(config_file, overrides)
}
