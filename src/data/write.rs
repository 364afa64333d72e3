//! Writing output tables as Parquet (zstd) with polars.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};

/// Writes `table` to `path` as Parquet with zstd compression, flushed to disk.
pub fn write_parquet(table: &Table, path: &Path) -> Result<()> {
    let mut df = to_frame(table, path)?;
    let file = File::create(path).map_err(|e| Error::output(path, "cannot create", e))?;
    ParquetWriter::new(&file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| write_error(path, e))?;
    file.sync_all().map_err(|e| Error::output(path, "cannot flush", e))?;
    Ok(())
}

/// A Parquet file written in parts as they are produced, one row group per part (zstd), so that a table larger
/// than memory can be written. Every part has the first part's columns and types.
pub struct PartWriter {
    path: PathBuf,
    file: File,
    writer: Option<BatchedWriter<File>>,
    rows: usize,
}

impl PartWriter {
    /// Creates (truncates) the file; nothing is written before the first part.
    pub fn create(path: &Path) -> Result<PartWriter> {
        let file = File::create(path).map_err(|e| Error::output(path, "cannot create", e))?;
        Ok(PartWriter { path: path.to_owned(), file, writer: None, rows: 0 })
    }

    /// Appends `table` as one row group.
    pub fn write(&mut self, table: &Table) -> Result<()> {
        let df = to_frame(table, &self.path)?;
        if self.writer.is_none() {
            let out = self.file.try_clone().map_err(|e| Error::output(&self.path, "cannot write", e))?;
            let w = ParquetWriter::new(out)
                .with_compression(ParquetCompression::Zstd(None))
                .batched(df.schema())
                .map_err(|e| write_error(&self.path, e))?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().ok_or_else(|| Error::Internal("part writer".into()))?;
        w.write_batch(&df).map_err(|e| write_error(&self.path, e))?;
        self.rows += table.rows();
        Ok(())
    }

    /// Writes the footer and flushes the file to disk; the rows written in all.
    pub fn finish(self) -> Result<usize> {
        let Some(w) = self.writer else {
            return Err(Error::Internal(format!("{}: no part was written", self.path.display())));
        };
        w.finish().map_err(|e| write_error(&self.path, e))?;
        drop(w);
        self.file.sync_all().map_err(|e| Error::output(&self.path, "cannot flush", e))?;
        Ok(self.rows)
    }
}

fn write_error(path: &Path, e: PolarsError) -> Error {
    Error::output(path, "cannot write", std::io::Error::other(e.to_string()))
}

/// The table as a polars frame (fixed-size lists for vectors).
fn to_frame(table: &Table, path: &Path) -> Result<DataFrame> {
    let internal = |e: PolarsError| Error::Internal(format!("building {}: {e}", path.display()));
    let mut cols = Vec::with_capacity(table.columns.len());
    for (name, data) in &table.columns {
        let name = PlSmallStr::from(name.as_str());
        let series = match data {
            ColumnData::I32(v) => Series::new(name, v),
            ColumnData::I64(v) => Series::new(name, v),
            ColumnData::OptI64(v) => Series::new(name, v),
            ColumnData::F64(v) => Series::new(name, v),
            ColumnData::Str(v) => Series::new(name, v),
            ColumnData::Vectors { dim, values } => {
                let dim = u64::try_from(*dim).map_err(|e| Error::Internal(e.to_string()))?;
                Series::new(name, values)
                    .reshape_array(&[ReshapeDimension::Infer, ReshapeDimension::new_dimension(dim)])
                    .map_err(internal)?
            }
        };
        cols.push(Column::from(series));
    }
    DataFrame::new_infer_height(cols).map_err(internal)
}
