//! What planning needs to know of the world, read before it starts (`job::load` gathers it), so that turning a
//! config into a plan does no I/O: the listing of the input, which side files exist, whether the output folder is
//! a file, and the contextual stage's model folder.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::encoder::ModelFolder;
use crate::error::Error;

/// The files an input path names and the folder hive partitions are read below (see `data::input::input_files`),
/// or why they cannot be listed.
pub type InputListing = std::result::Result<(Vec<PathBuf>, PathBuf), String>;

/// Facts about the file system, as they were when the plan was made.
#[derive(Debug)]
pub struct Facts {
    /// What `input.path` names.
    pub input: InputListing,
    /// Whether `input.path` exists.
    pub input_exists: bool,
    /// Whether `input.path` is a folder.
    pub input_is_dir: bool,
    /// Of the side files the config names (`eval.labels`, `eval.pairs`, `eval.senses`), those that are files.
    pub files: BTreeSet<PathBuf>,
    /// Whether the output folder is an existing file.
    pub output_is_file: bool,
    /// The model folder of `[contextual]`, read (or why it could not be); `None` without the section.
    pub model: Option<std::result::Result<ModelFolder, Error>>,
    /// The starting folder of `[finetune]`, read (or why it could not be); `None` without the section.
    pub finetune_model: Option<std::result::Result<ModelFolder, Error>>,
}

impl Facts {
    /// Whether `path` (resolved as the plan resolves it) is an existing file.
    pub fn is_file(&self, path: &Path) -> bool {
        self.files.contains(path)
    }

    /// Facts of a world where the input is one existing file and every named side file exists (tests, tools).
    pub fn assumed(input: &Path, files: impl IntoIterator<Item = PathBuf>) -> Facts {
        let parent = input.parent().map(Path::to_path_buf).unwrap_or_default();
        Facts {
            input: Ok((vec![input.to_path_buf()], parent)),
            input_exists: true,
            input_is_dir: false,
            files: files.into_iter().collect(),
            output_is_file: false,
            model: None,
            finetune_model: None,
        }
    }
}
