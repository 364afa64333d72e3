//! Reading the run's own Parquet outputs back, a slice of rows at a time, as plain [`Table`]s: what the hand-off
//! formats are written from, so they hold exactly what the Parquet files hold without the whole file in memory.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::table::{ColumnData, Table};

/// Calls `f` with every slice of up to `rows` rows of `columns` of the Parquet file at `path`, in order; returns
/// the file's row count.
pub fn for_each_slice(
    path: &Path,
    columns: &[&str],
    rows: usize,
    mut f: impl FnMut(&Table) -> Result<()>,
) -> Result<usize> {
    let err = |e: PolarsError| Error::input(path, None, format!("cannot read back: {e}"));
    let open = || File::open(path).map_err(|e| Error::input(path, None, format!("cannot open: {e}")));
    let total = ParquetReader::new(open()?).num_rows().map_err(err)?;
    let names: Vec<String> = columns.iter().map(|c| (*c).to_owned()).collect();
    let mut offset = 0;
    while offset < total {
        let df = ParquetReader::new(open()?)
            .with_columns(Some(names.clone()))
            .with_slice(Some((offset, rows.max(1))))
            .finish()
            .map_err(err)?;
        f(&to_table(path, &df)?)?;
        offset += rows.max(1);
    }
    Ok(total)
}

/// A frame of our own column types (strings, integers, floats, fixed-size lists of f32) as a [`Table`].
fn to_table(path: &Path, df: &DataFrame) -> Result<Table> {
    let mut columns = Vec::new();
    for c in df.columns() {
        let name = c.name().to_string();
        let s = c.as_materialized_series();
        let bad = |what: &str| Error::input(path, Some(&name), format!("cannot read back {what} ({})", s.dtype()));
        let data = match s.dtype() {
            DataType::String => ColumnData::Str(
                s.str().map_err(|_| bad("text"))?.iter().map(|v| v.unwrap_or_default().to_owned()).collect(),
            ),
            DataType::Int32 | DataType::Int64 => {
                let v = s.cast(&DataType::Int64).map_err(|_| bad("integers"))?;
                ColumnData::OptI64(v.i64().map_err(|_| bad("integers"))?.iter().collect())
            }
            DataType::Float64 => {
                ColumnData::F64(s.f64().map_err(|_| bad("floats"))?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
            }
            DataType::Array(_, dim) => {
                let arr = s.array().map_err(|_| bad("vectors"))?;
                let inner = arr.get_inner();
                let values: Vec<f32> =
                    inner.f32().map_err(|_| bad("vectors"))?.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                ColumnData::Vectors { dim: *dim, values }
            }
            _ => return Err(bad("a column")),
        };
        columns.push((name, data));
    }
    Ok(Table { columns })
}
