//! Reading the run's own Parquet outputs back, a slice of rows at a time, as plain [`Table`]s: what the hand-off
//! formats are written from, so they hold exactly what the Parquet files hold without the whole file in memory.

use std::fs::File;
use std::path::Path;

use polars::prelude::*;

use crate::data::table::{ColumnData, Table};
use crate::error::{Error, Result};

/// The row count of one of the run's Parquet tables (a file, or a folder of parts), from the footers.
pub fn row_count(path: &Path) -> Result<usize> {
    let mut total = 0;
    for file in table_files(path)? {
        let f = File::open(&file).map_err(|e| Error::input(&file, None, format!("cannot open: {e}")))?;
        total += ParquetReader::new(f)
            .num_rows()
            .map_err(|e| Error::input(&file, None, format!("cannot read back: {e}")))?;
    }
    Ok(total)
}

/// A run's table `<stem>.parquet`, or the folder `<stem>/` of its parts (a merged run's text vectors), if either
/// is there.
pub fn find_table(root: &Path, stem: &str) -> Option<std::path::PathBuf> {
    let file = root.join(format!("{stem}.parquet"));
    let folder = root.join(stem);
    if file.is_file() {
        Some(file)
    } else if folder.is_dir() {
        Some(folder)
    } else {
        None
    }
}

/// The files of a table: the file itself, or a folder's `*.parquet` parts in name order.
fn table_files(path: &Path) -> Result<Vec<std::path::PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let rd = std::fs::read_dir(path).map_err(|e| Error::input(path, None, format!("cannot list: {e}")))?;
    let mut files: Vec<std::path::PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    Ok(files)
}

/// Calls `f` with every slice of up to `rows` rows of `columns` of the Parquet table at `path` (a file, or a folder
/// of parts read in name order; a slice never spans two parts), in order; returns the table's row count.
pub fn for_each_slice(
    path: &Path,
    columns: &[&str],
    rows: usize,
    mut f: impl FnMut(&Table) -> Result<()>,
) -> Result<usize> {
    let mut all = 0;
    for file in table_files(path)? {
        all += slices_of_file(&file, columns, rows, &mut f)?;
    }
    Ok(all)
}

fn slices_of_file(
    path: &Path,
    columns: &[&str],
    rows: usize,
    f: &mut impl FnMut(&Table) -> Result<()>,
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

/// Rows `offset..offset + len` (fewer at the end) of `columns` of one Parquet file.
pub fn read_slice(path: &Path, columns: &[&str], offset: usize, len: usize) -> Result<Table> {
    let err = |e: PolarsError| Error::input(path, None, format!("cannot read back: {e}"));
    let f = File::open(path).map_err(|e| Error::input(path, None, format!("cannot open: {e}")))?;
    let df = ParquetReader::new(f)
        .with_columns(Some(columns.iter().map(|c| (*c).to_owned()).collect()))
        .with_slice(Some((offset, len)))
        .finish()
        .map_err(err)?;
    to_table(path, &df)
}

/// pca_components.parquet (long: component, `<kind>_id`, `<kind>`, loading) as one row of loadings per token or
/// feature, in id order.
#[derive(Debug, Clone, Default)]
pub struct Loadings {
    pub ids: Vec<i64>,
    pub names: Vec<String>,
    /// Components.
    pub k: usize,
    /// ids.len() × k, row-major.
    pub values: Vec<f32>,
}

/// Reads pca_components.parquet back as [`Loadings`]; `kind` is "token" or "feature".
pub fn read_loadings(path: &Path, kind: &str) -> Result<Loadings> {
    let id_col = format!("{kind}_id");
    let mut names: std::collections::BTreeMap<i64, String> = std::collections::BTreeMap::new();
    let mut entries: Vec<(i64, usize, f64)> = Vec::new();
    for_each_slice(path, &["component", &id_col, kind, "loading"], 65_536, |t| {
        let col = |n: &str| t.columns.iter().find(|(c, _)| c == n).map(|(_, d)| d);
        let (
            Some(ColumnData::OptI64(comp)),
            Some(ColumnData::OptI64(id)),
            Some(ColumnData::Str(name)),
            Some(ColumnData::F64(l)),
        ) = (col("component"), col(&id_col), col(kind), col("loading"))
        else {
            return Err(Error::input(path, None, "unexpected columns"));
        };
        for i in 0..comp.len() {
            let (c, j) = (comp[i].unwrap_or(0).max(0) as usize, id[i].unwrap_or(0));
            names.entry(j).or_insert_with(|| name[i].clone());
            entries.push((j, c, l[i]));
        }
        Ok(())
    })?;
    let k = entries.iter().map(|e| e.1 + 1).max().unwrap_or(0);
    let ids: Vec<i64> = names.keys().copied().collect();
    let index: std::collections::HashMap<i64, usize> = ids.iter().enumerate().map(|(r, &j)| (j, r)).collect();
    let mut values = vec![0f32; ids.len() * k];
    for (j, c, v) in entries {
        values[index[&j] * k + c] = v as f32;
    }
    Ok(Loadings { ids, names: names.into_values().collect(), k, values })
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
