//! Every problem of a config, collected with its key path so that `embjob validate` lists them all at once.

use std::path::Path;

use crate::error::{ConfigProblem, Error, Result};

#[derive(Default)]
pub(super) struct Problems(Vec<ConfigProblem>);

impl Problems {
    pub(super) fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(ConfigProblem { key: key.to_owned(), message: message.into() });
    }

    /// How many so far: a check compares before and after to know whether it found any.
    pub(super) fn count(&self) -> usize {
        self.0.len()
    }

    pub(super) fn into_result(self, file: &Path) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::ConfigInvalid { file: file.to_owned(), problems: self.0 })
        }
    }
}
