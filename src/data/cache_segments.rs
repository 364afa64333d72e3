//! The encoder cache's segments as Parquet: one row per encoded text (`text_sha256`, the cache `key`, its `tokens`,
//! whether it was `truncated`, its `vector`), written in row groups of [`SEGMENT_ROW_GROUP`] rows so that a run
//! reads back only the row groups holding its hits. Only the file format lives here; what a segment may be trusted
//! with is decided by the cache itself (`stages::vector_cache`).

use std::path::Path;

use crate::data::read_back::{for_each_slice, read_slice};
use crate::data::table::{ColumnData, Table};
use crate::data::PartWriter;
use crate::error::{Error, Result};

/// Rows per row group of a segment: the unit a run reads back vectors in.
pub const SEGMENT_ROW_GROUP: usize = 8_192;

/// Rows per slice when a run scans a segment's digests.
const SCAN_ROWS: usize = 65_536;

/// One cached text as scanned (its vector stays on disk): the row's index in its segment, the hex SHA-256 of the
/// text, the cache key it was written under, its token count and whether it was truncated.
pub struct ScannedRow<'a> {
    pub index: usize,
    pub digest: &'a str,
    pub key: &'a str,
    pub tokens: u32,
    pub truncated: bool,
}

/// A segment written row by row (buffered into row groups of [`SEGMENT_ROW_GROUP`]).
pub struct SegmentWriter {
    part: PartWriter,
    key: String,
    dim: usize,
    digests: Vec<String>,
    tokens: Vec<i64>,
    truncated: Vec<i32>,
    vectors: Vec<f32>,
    rows: usize,
}

impl SegmentWriter {
    pub fn create(path: &Path, key: &str, dim: usize) -> Result<SegmentWriter> {
        Ok(SegmentWriter {
            part: PartWriter::create(path)?,
            key: key.to_owned(),
            dim,
            digests: Vec::new(),
            tokens: Vec::new(),
            truncated: Vec::new(),
            vectors: Vec::new(),
            rows: 0,
        })
    }

    /// Appends one text's row; `vector` must hold the segment's dimension.
    pub fn push(&mut self, digest: String, tokens: usize, truncated: bool, vector: &[f32]) -> Result<()> {
        if vector.len() != self.dim {
            return Err(Error::Internal(format!("a cached vector of {} values, not {}", vector.len(), self.dim)));
        }
        self.digests.push(digest);
        self.tokens.push(tokens as i64);
        self.truncated.push(i32::from(truncated));
        self.vectors.extend_from_slice(vector);
        self.rows += 1;
        if self.digests.len() == SEGMENT_ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    fn flush(&mut self) -> Result<()> {
        if self.digests.is_empty() {
            return Ok(());
        }
        let n = self.digests.len();
        self.part.write(&Table::new(vec![
            ("text_sha256", ColumnData::Str(std::mem::take(&mut self.digests))),
            ("key", ColumnData::Str(vec![self.key.clone(); n])),
            ("tokens", ColumnData::I64(std::mem::take(&mut self.tokens))),
            ("truncated", ColumnData::I32(std::mem::take(&mut self.truncated))),
            ("vector", ColumnData::Vectors { dim: self.dim, values: std::mem::take(&mut self.vectors) }),
        ]))
    }

    /// Writes the last row group and the footer, flushed to disk; the rows written (a segment has at least one).
    pub fn finish(mut self) -> Result<usize> {
        self.flush()?;
        self.part.finish()
    }
}

/// Calls `f` with every row of a segment (digests, keys, token counts; no vectors), in order, reading
/// [`SCAN_ROWS`] rows at a time; the segment's row count.
pub fn scan_segment(path: &Path, mut f: impl FnMut(&ScannedRow<'_>)) -> Result<usize> {
    let mut index = 0;
    for_each_slice(path, &["text_sha256", "key", "tokens", "truncated"], SCAN_ROWS, |t| {
        let (
            Some(ColumnData::Str(digests)),
            Some(ColumnData::Str(keys)),
            Some(ColumnData::OptI64(tokens)),
            Some(ColumnData::OptI64(truncated)),
        ) = (t.column("text_sha256"), t.column("key"), t.column("tokens"), t.column("truncated"))
        else {
            return Err(Error::input(path, None, "not a cache segment (text_sha256, key, tokens, truncated)"));
        };
        for i in 0..digests.len() {
            let tokens = tokens[i].and_then(|v| u32::try_from(v).ok());
            let Some(tokens) = tokens else {
                return Err(Error::input(path, Some("tokens"), format!("row {}: not a token count", index + i)));
            };
            f(&ScannedRow {
                index: index + i,
                digest: &digests[i],
                key: &keys[i],
                tokens,
                truncated: truncated[i] == Some(1),
            });
        }
        index += digests.len();
        Ok(())
    })
}

/// Rows `offset..offset + len` of a segment's vectors (fewer at its end): the dimension and the values, row-major.
pub fn read_segment_vectors(path: &Path, offset: usize, len: usize) -> Result<(usize, Vec<f32>)> {
    let table = read_slice(path, &["vector"], offset, len)?;
    match table.columns.into_iter().next() {
        Some((_, ColumnData::Vectors { dim, values })) => Ok((dim, values)),
        _ => Err(Error::input(path, Some("vector"), "not a column of vectors")),
    }
}

/// Every column of some rows of a segment (what compaction copies).
pub struct SegmentRows {
    pub digests: Vec<String>,
    pub tokens: Vec<u32>,
    pub truncated: Vec<bool>,
    pub dim: usize,
    pub vectors: Vec<f32>,
}

/// Rows `offset..offset + len` of a segment, every column but the key (fewer rows at its end).
pub fn read_segment_rows(path: &Path, offset: usize, len: usize) -> Result<SegmentRows> {
    let t = read_slice(path, &["text_sha256", "tokens", "truncated", "vector"], offset, len)?;
    let (
        Some(ColumnData::Str(digests)),
        Some(ColumnData::OptI64(tokens)),
        Some(ColumnData::OptI64(truncated)),
        Some(ColumnData::Vectors { dim, values }),
    ) = (t.column("text_sha256"), t.column("tokens"), t.column("truncated"), t.column("vector"))
    else {
        return Err(Error::input(path, None, "not a cache segment (text_sha256, tokens, truncated, vector)"));
    };
    Ok(SegmentRows {
        digests: digests.clone(),
        tokens: tokens.iter().map(|v| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(0)).collect(),
        truncated: truncated.iter().map(|v| *v == Some(1)).collect(),
        dim: *dim,
        vectors: values.clone(),
    })
}
