//! The contextual stage's files, written as it goes into the run's staging folder: one row group of
//! `text_embeddings.parquet` per window, in input order, and the window's word rows in `token_embeddings.parquet`
//! (created with the first one). With the document evaluation, the vectors are also kept in memory.

use std::path::Path;

use super::windows::Window;
use super::words::TOKENS_FILE;
use super::WindowVectors;
use crate::data::dataset::TextCorpus;
use crate::data::table::{ColumnData, Table};
use crate::data::PartWriter;
use crate::encoder::WordsParams;
use crate::error::Result;
use crate::runtime::progress::Reporter;

/// The files written (name, rows) and, when they were kept, every document's vector.
pub type Finished = (Vec<(String, usize)>, Option<Vec<f32>>);

/// The file of the document vectors.
const VECTORS_FILE: &str = "text_embeddings.parquet";

pub struct Writing {
    dir: std::path::PathBuf,
    vectors: PartWriter,
    tokens: Option<PartWriter>,
    /// Every vector so far, in input order, when they are kept.
    kept: Option<Vec<f32>>,
}

impl Writing {
    pub fn create(dir: &Path, keep: bool) -> Result<Writing> {
        let vectors = PartWriter::create(&dir.join(VECTORS_FILE))?;
        Ok(Writing { dir: dir.to_owned(), vectors, tokens: None, kept: keep.then(Vec::new) })
    }

    /// One window: its vectors as a row group (row ids counted from `first_row`, the shard's first row), its word
    /// rows when it has any.
    pub fn write(
        &mut self,
        window: &Window,
        corpus: &TextCorpus,
        first_row: usize,
        encoded: WindowVectors,
    ) -> Result<()> {
        let rows = window.start..window.start + window.tokens.len();
        let dim = encoded.vectors.len() / rows.len().max(1);
        if let Some(kept) = &mut self.kept {
            kept.extend_from_slice(&encoded.vectors);
        }
        self.vectors.write(&Table::new(vec![
            ("row_id", ColumnData::I64(rows.clone().map(|r| (first_row + r) as i64).collect())),
            ("row", ColumnData::Str(corpus.ids[rows].to_vec())),
            ("vector", ColumnData::Vectors { dim, values: encoded.vectors }),
        ]))?;
        if !encoded.token_rows.is_empty() {
            if self.tokens.is_none() {
                self.tokens = Some(PartWriter::create(&self.dir.join(TOKENS_FILE))?);
            }
            if let Some(tw) = self.tokens.as_mut() {
                tw.write(&encoded.token_rows.into_table())?;
            }
        }
        Ok(())
    }

    /// Closes the files: (file, rows) of each written, and the kept vectors. Says when the word rows stayed empty
    /// or stopped at `words_limit`.
    pub fn finish(self, reporter: &dyn Reporter, words: Option<&WordsParams>, occurrences: usize) -> Result<Finished> {
        let mut written = vec![(VECTORS_FILE.to_owned(), self.vectors.finish()?)];
        if let Some(wp) = words {
            match self.tokens {
                Some(tw) => written.push((TOKENS_FILE.to_owned(), tw.finish()?)),
                None => reporter.notice(
                    "contextual: no document has any of contextual.words; token_embeddings.parquet is not written",
                ),
            }
            if wp.only.is_none() && occurrences >= wp.limit {
                reporter.notice(&format!(
                    "contextual: word vectors stop at contextual.words_limit = {} occurrences",
                    wp.limit
                ));
            }
        }
        Ok((written, self.kept))
    }
}
