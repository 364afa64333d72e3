//! Writing output tables as Parquet (zstd) with polars.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::table::{ColumnData, Table};

/// Writes `table` to `path` as Parquet with zstd compression, flushed to disk.
pub fn write_parquet(table: &Table, path: &Path) -> Result<()> {
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
    let mut df = DataFrame::new_infer_height(cols).map_err(internal)?;
    let file = File::create(path).map_err(|e| Error::output(path, "cannot create", e))?;
    ParquetWriter::new(&file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)
        .map_err(|e| Error::output(path, "cannot write", std::io::Error::other(e.to_string())))?;
    file.sync_all().map_err(|e| Error::output(path, "cannot flush", e))?;
    Ok(())
}
