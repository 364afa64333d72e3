//! A pipeline file to a plan: the file read and parsed, the facts the plan needs read from the file system (the
//! input's listing, the side files, the output folder, the model folder), then the plan made from them without
//! further I/O.

use std::path::Path;

use crate::data::input::input_files;
use crate::encoder::ModelFolder;
use crate::error::Result;
use crate::plan::config::Config;
use crate::plan::{base_dir, output_dir, side_files, Facts, Overrides, Plan, FINETUNED};

/// Reads, parses and validates a pipeline file.
pub fn load(file: &Path, overrides: &Overrides) -> Result<Plan> {
    plan_from(Config::from_file(file)?, file, overrides)
}

/// Validates a parsed config (`file` locates its relative paths) against the file system as it is now.
pub fn plan_from(config: Config, file: &Path, overrides: &Overrides) -> Result<Plan> {
    let facts = facts(&config, file, overrides);
    Plan::from_config(config, file, facts, overrides)
}

/// What the plan needs to know of the file system for `config`.
pub fn facts(config: &Config, file: &Path, overrides: &Overrides) -> Facts {
    let base = base_dir(file);
    let input = base.join(&config.input.path);
    // `contextual.model = "finetuned"` encodes with the model [finetune] trains, which has its starting folder's
    // architecture, tokenizer and modules: the plan reads that folder.
    let finetune_model = config
        .finetune
        .as_ref()
        .filter(|f| !f.model.trim().is_empty() && f.model.trim() != FINETUNED)
        .map(|f| ModelFolder::open(&base.join(&f.model)));
    let model = config.contextual.as_ref().filter(|c| !c.model.trim().is_empty()).and_then(|c| {
        if c.model.trim() == FINETUNED {
            config.finetune.as_ref().map(|f| ModelFolder::open(&base.join(&f.model)))
        } else {
            Some(ModelFolder::open(&base.join(&c.model)))
        }
    });
    Facts {
        input: input_files(&input),
        input_exists: input.exists(),
        input_is_dir: input.is_dir(),
        files: side_files(config, file).into_iter().filter(|p| p.is_file()).collect(),
        output_is_file: output_dir(config, file, overrides).is_file(),
        model,
        finetune_model,
    }
}
