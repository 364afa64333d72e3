//! Reading inputs with polars (eager readers, only the needed columns). Every error names the file and the column.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use polars::prelude::*;

use crate::data::dataset::{Dataset, Interactions, NumericTable, TextCorpus};
use crate::data::input::{Format, InputColumns, InputSpec, LabelsFile};
use crate::error::{Error, Result};

/// Reads the input of a plan into a [`Dataset`].
pub fn read_input(input: &InputSpec) -> Result<Dataset> {
    let path = input.path.as_path();
    let wanted: Option<Vec<String>> = match &input.columns {
        InputColumns::Long { user, item, order, weight } => {
            Some([Some(user), Some(item), order.as_ref(), weight.as_ref()].into_iter().flatten().cloned().collect())
        }
        InputColumns::List { user, items } => Some(vec![user.clone(), items.clone()]),
        InputColumns::Text { text, id } => Some([Some(text), id.as_ref()].into_iter().flatten().cloned().collect()),
        InputColumns::Numeric { columns: Some(cols), id, .. } => Some(cols.iter().chain(id.iter()).cloned().collect()),
        InputColumns::Numeric { columns: None, .. } => None,
    };
    let df = read_frame(input, wanted.as_deref())?;
    if df.height() == 0 {
        return Err(Error::input(path, None, "the table has no rows"));
    }
    match &input.columns {
        InputColumns::Long { user, item, order, weight } => {
            read_long(path, &df, user, item, order.as_deref(), weight.as_deref())
        }
        InputColumns::List { user, items } => read_list(path, &df, user, items),
        InputColumns::Text { text, id } => read_text(path, &df, text, id.as_deref()),
        InputColumns::Numeric { columns, id, exclude } => {
            read_numeric(path, &df, columns.as_deref(), id.as_deref(), exclude)
        }
    }
    .inspect(|d| debug_assert_eq!(d.rows(), d.row_ids().len()))
}

/// A side file (benchmark texts, sense rows, similarity pairs): only `columns`, comma-separated when CSV.
fn side_frame(path: &Path, format: Format, columns: &[&str]) -> Result<DataFrame> {
    let input = InputSpec::file(
        path.to_owned(),
        format,
        InputColumns::Text { text: columns.first().copied().unwrap_or_default().to_owned(), id: None },
        b',',
    );
    read_frame(&input, Some(&columns.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()))
}

/// The non-null values of one text column (for benchmarks on real data sets with a few missing values) and how
/// many nulls were skipped.
pub fn read_text_column(path: &Path, format: Format, column: &str) -> Result<(Vec<String>, usize)> {
    let df = side_frame(path, format, &[column])?;
    let s = df.column(column).map_err(|e| Error::input(path, Some(column), e.to_string()))?.as_materialized_series();
    let ca = s.str().map_err(|_| Error::input(path, Some(column), format!("expected text, found {}", s.dtype())))?;
    let texts: Vec<String> = ca.iter().flatten().map(str::to_owned).collect();
    Ok((texts, ca.null_count()))
}

/// Runs a polars read, turning a panic inside the reader (polars-parquet panics on some corrupt files, found by the
/// fuzzer) into an input error naming the file. Panic messages are kept off stderr meanwhile: one process-wide hook,
/// installed once, stays silent for a panic on a thread inside `guarded` or on one of polars' worker threads while any
/// guarded read runs, and hands every other panic to the hook that was there before.
fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    thread_local! {
        static GUARDED: Cell<bool> = const { Cell::new(false) };
    }
    static ACTIVE: AtomicUsize = AtomicUsize::new(0);
    static MESSAGE: Mutex<String> = Mutex::new(String::new());
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let worker = std::thread::current().name().is_some_and(|n| n.starts_with("polars"));
            if GUARDED.with(Cell::get) || (worker && ACTIVE.load(Ordering::SeqCst) > 0) {
                let payload = info.payload();
                let m = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown reader failure".to_owned());
                if let Ok(mut slot) = MESSAGE.lock() {
                    *slot = m;
                }
            } else {
                previous(info);
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    GUARDED.with(|g| g.set(was));
    outcome.unwrap_or_else(|_| {
        let m = MESSAGE.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default();
        Err(Error::input(path, None, format!("cannot read the file: it is corrupt (the reader failed: {m})")))
    })
}

/// Reads the input with only `columns` (all when `None`): one file, or every file of a folder or glob in order,
/// stacked into one table (see [`read_many`]).
fn read_frame(input: &InputSpec, columns: Option<&[String]>) -> Result<DataFrame> {
    if input.is_many() {
        read_many(input, columns)
    } else {
        read_one(input, columns)
    }
}

/// The `key=value` folders between `root` and `file` (Hive partitions, as Spark and DuckDB write them).
fn hive_partitions(root: &Path, file: &Path) -> Vec<(String, String)> {
    let rel = file.strip_prefix(root).unwrap_or(file);
    let mut parts: Vec<(String, String)> = rel
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
        .filter_map(|c| c.as_os_str().to_str()?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    parts.dedup_by(|a, b| a.0 == b.0);
    parts
}

/// Every file of a folder or glob, in path order, as one table: each file read and checked on its own (errors name
/// the file, and a null's row within it), a requested column that names a Hive partition folder (`key=value`) taken
/// from the folder name (as text), then stacked; a column whose type differs from the first file's is an error naming both.
fn read_many(input: &InputSpec, columns: Option<&[String]>) -> Result<DataFrame> {
    let mut stacked: Option<DataFrame> = None;
    for file in &input.files {
        let single = InputSpec::file(file.clone(), input.format, input.columns.clone(), input.separator);
        let parts = hive_partitions(&input.root, file);
        let from_path = |c: &String| parts.iter().find(|(k, _)| k == c).map(|(_, v)| v.clone());
        // A partition column comes from the folder names, as Spark and DuckDB read them (files do not hold it).
        let wanted: Option<Vec<String>> =
            columns.map(|cols| cols.iter().filter(|c| from_path(c).is_none()).cloned().collect());
        let mut df = read_one(&single, wanted.as_deref())?;
        let height = df.height();
        for c in columns.into_iter().flatten() {
            if df.column(c).is_err() {
                if let Some(v) = from_path(c) {
                    df.with_column(Column::new(c.as_str().into(), vec![v; height]))
                        .map_err(|e| Error::input(file, Some(c), e.to_string()))?;
                }
            }
        }
        if let Some(cols) = columns {
            df = df.select(cols.iter().map(String::as_str)).map_err(|e| Error::input(file, None, e.to_string()))?;
        }
        for c in df.columns() {
            let s = c.as_materialized_series();
            if s.null_count() > 0 {
                let first = s.is_null().iter().position(|v| v == Some(true)).unwrap_or(0);
                return Err(Error::input(
                    file,
                    Some(c.name()),
                    format!("{} null value(s); the first at data row {} of this file", s.null_count(), first + 1),
                ));
            }
        }
        match stacked.as_mut() {
            None => stacked = Some(df),
            Some(all) => {
                for (a, b) in all.columns().iter().zip(df.columns()) {
                    if a.name() != b.name() || a.dtype() != b.dtype() {
                        return Err(Error::input(
                            file,
                            Some(b.name()),
                            format!(
                                "column '{}' ({}) does not match '{}' ({}) of the first file, {}",
                                b.name(),
                                b.dtype(),
                                a.name(),
                                a.dtype(),
                                input.files[0].display()
                            ),
                        ));
                    }
                }
                if all.width() != df.width() {
                    return Err(Error::input(file, None, "a different set of columns than the first file"));
                }
                all.vstack_mut(&df).map_err(|e| Error::input(file, None, e.to_string()))?;
            }
        }
    }
    let mut df = stacked.ok_or_else(|| Error::input(&input.path, None, "no data files"))?;
    df.align_chunks_par();
    Ok(df)
}

/// Reads one file with only `columns` (all when `None`), checking first that each exists.
fn read_one(input: &InputSpec, columns: Option<&[String]>) -> Result<DataFrame> {
    let df = guarded(&input.path, || read_frame_unguarded(input, columns))?;
    // A corrupt file can decode into columns of different lengths (found by the fuzzer); nothing below may index
    // one column by another's rows.
    for c in df.columns() {
        if c.len() != df.height() {
            return Err(Error::input(
                &input.path,
                Some(c.name()),
                format!("the file is corrupt: this column has {} values, the table {} rows", c.len(), df.height()),
            ));
        }
    }
    Ok(df)
}

fn read_frame_unguarded(input: &InputSpec, columns: Option<&[String]>) -> Result<DataFrame> {
    let path = input.path.as_path();
    // Parquet is read into memory once: its footer and page headers are checked before polars decodes it.
    let parquet = match input.format {
        Format::Parquet => {
            let bytes = std::fs::read(path).map_err(|e| Error::input(path, None, format!("cannot open: {e}")))?;
            super::parquet_check::check(path, &bytes, columns, crate::runtime::memory::physical())?;
            Some(bytes)
        }
        Format::Csv => None,
    };
    let available = column_names(input, parquet.as_deref())?;
    if let Some(cols) = columns {
        for c in cols {
            if !available.iter().any(|a| a == c) {
                return Err(Error::input(
                    path,
                    Some(c),
                    format!("no such column (the file has: {})", available.join(", ")),
                ));
            }
        }
    }
    let cannot = |e: PolarsError| Error::input(path, None, format!("cannot read the file: {e}"));
    match parquet {
        None => {
            let mut opts = CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(None)
                .with_parse_options(CsvParseOptions::default().with_separator(input.separator));
            if let Some(cols) = columns {
                opts = opts.with_columns(Some(cols.iter().map(|c| PlSmallStr::from(c.as_str())).collect::<Arc<[_]>>()));
            }
            opts.try_into_reader_with_file_path(Some(path.to_owned())).map_err(cannot)?.finish().map_err(cannot)
        }
        Some(bytes) => ParquetReader::new(std::io::Cursor::new(bytes))
            .with_columns(columns.map(<[String]>::to_vec))
            .finish()
            .map_err(cannot),
    }
}

/// The column names of the file, read from its header or schema only (`parquet`: the file's bytes, already checked).
fn column_names(input: &InputSpec, parquet: Option<&[u8]>) -> Result<Vec<String>> {
    let path = input.path.as_path();
    let cannot = |e: PolarsError| Error::input(path, None, format!("cannot read the file: {e}"));
    match parquet {
        None => {
            let df = CsvReadOptions::default()
                .with_has_header(true)
                .with_n_rows(Some(1))
                .with_parse_options(CsvParseOptions::default().with_separator(input.separator))
                .try_into_reader_with_file_path(Some(path.to_owned()))
                .map_err(cannot)?
                .finish()
                .map_err(cannot)?;
            Ok(df.get_column_names().into_iter().map(|c| c.to_string()).collect())
        }
        Some(bytes) => {
            let schema = ParquetReader::new(std::io::Cursor::new(bytes)).schema().map_err(cannot)?;
            Ok(schema.iter_names().map(|c| c.to_string()).collect())
        }
    }
}

fn column<'a>(path: &Path, df: &'a DataFrame, name: &str) -> Result<&'a Series> {
    let col = df.column(name).map_err(|e| Error::input(path, Some(name), e.to_string()))?;
    let s = col.as_materialized_series();
    if s.null_count() > 0 {
        let first = s.is_null().iter().position(|v| v == Some(true)).unwrap_or(0);
        return Err(Error::input(
            path,
            Some(name),
            format!(
                "{} null value(s); the first at data row {} (1-based, header not counted)",
                s.null_count(),
                first + 1
            ),
        ));
    }
    Ok(s)
}

/// Keys of a column that may hold integers or strings: integers keep their numeric order.
enum Keys {
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

fn keys(path: &Path, df: &DataFrame, name: &str) -> Result<Keys> {
    let s = column(path, df, name)?;
    let dt = s.dtype();
    if dt.is_integer() {
        let s = s.cast(&DataType::Int64).map_err(|e| Error::input(path, Some(name), e.to_string()))?;
        let ca = s.i64().map_err(|e| Error::input(path, Some(name), e.to_string()))?;
        Ok(Keys::Ints(ca.into_no_null_iter().collect()))
    } else if dt.is_string() {
        let ca = s.str().map_err(|e| Error::input(path, Some(name), e.to_string()))?;
        Ok(Keys::Strs(ca.iter().map(|v| v.unwrap_or_default().to_owned()).collect()))
    } else {
        Err(Error::input(path, Some(name), format!("expected integers or strings, found {dt}")))
    }
}

/// Sorted unique labels of `keys`, and each key's index among them.
fn index_keys(keys: Keys) -> (Vec<String>, Option<Vec<i64>>, Vec<u32>) {
    match keys {
        Keys::Ints(v) => {
            let mut uniq = v.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let pos: HashMap<i64, u32> = uniq.iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();
            let idx = v.iter().map(|k| pos[k]).collect();
            (uniq.iter().map(i64::to_string).collect(), Some(uniq), idx)
        }
        Keys::Strs(v) => {
            let mut uniq = v.clone();
            uniq.sort_unstable();
            uniq.dedup();
            let pos: HashMap<&str, u32> = uniq.iter().enumerate().map(|(i, k)| (k.as_str(), i as u32)).collect();
            let idx = v.iter().map(|k| pos[k.as_str()]).collect();
            (uniq, None, idx)
        }
    }
}

fn read_long(
    path: &Path,
    df: &DataFrame,
    user: &str,
    item: &str,
    order: Option<&str>,
    weight: Option<&str>,
) -> Result<Dataset> {
    let (users, user_numbers, user_idx) = index_keys(keys(path, df, user)?);
    let (items, _, item_idx) = index_keys(keys(path, df, item)?);
    let order_vals: Option<Vec<f64>> = match order {
        None => None,
        Some(o) => Some(numeric_column(path, df, o)?),
    };
    let weight_vals: Option<Vec<f64>> = match weight {
        None => None,
        Some(w) => {
            let v = numeric_column(path, df, w)?;
            if let Some(r) = v.iter().position(|&x| x <= 0.0) {
                return Err(Error::input(
                    path,
                    Some(w),
                    format!("weight {} at data row {} is not positive", v[r], r + 1),
                ));
            }
            Some(v)
        }
    };
    let mut rows: Vec<Vec<(f64, usize, u32)>> = vec![Vec::new(); users.len()];
    for (r, (&u, &i)) in user_idx.iter().zip(&item_idx).enumerate() {
        let key = order_vals.as_ref().map_or(0.0, |o| o[r]);
        rows[u as usize].push((key, r, i));
    }
    let mut lists = Vec::with_capacity(rows.len());
    let mut weights = weight_vals.as_ref().map(|_| Vec::with_capacity(rows.len()));
    for mut v in rows {
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if let (Some(ws), Some(vals)) = (weights.as_mut(), weight_vals.as_ref()) {
            ws.push(v.iter().map(|&(_, r, _)| vals[r] as f32).collect());
        }
        lists.push(v.into_iter().map(|(_, _, i)| i).collect());
    }
    Ok(Dataset::Interactions(Interactions { users, user_numbers, items, lists, weights }))
}

fn read_list(path: &Path, df: &DataFrame, user: &str, items_col: &str) -> Result<Dataset> {
    let (users, user_numbers, user_idx) = index_keys(keys(path, df, user)?);
    if users.len() != user_idx.len() {
        return Err(Error::input(
            path,
            Some(user),
            "a user appears on more than one row; the list layout wants one row per user",
        ));
    }
    let s = column(path, df, items_col)?;
    let inner = match s.dtype() {
        DataType::List(inner) => inner.as_ref().clone(),
        dt => return Err(Error::input(path, Some(items_col), format!("expected a list column, found {dt}"))),
    };
    let flat = s
        .explode(ExplodeOptions { empty_as_null: false, keep_nulls: true })
        .map_err(|e| Error::input(path, Some(items_col), e.to_string()))?;
    let lens: Vec<usize> = s
        .list()
        .map_err(|e| Error::input(path, Some(items_col), e.to_string()))?
        .amortized_iter()
        .map(|l| l.map_or(0, |l| l.as_ref().len()))
        .collect();
    if flat.null_count() > 0 {
        return Err(Error::input(path, Some(items_col), "a list holds a null item"));
    }
    let flat_keys = if inner.is_integer() {
        let f = flat.cast(&DataType::Int64).map_err(|e| Error::input(path, Some(items_col), e.to_string()))?;
        Keys::Ints(
            f.i64().map_err(|e| Error::input(path, Some(items_col), e.to_string()))?.into_no_null_iter().collect(),
        )
    } else if inner.is_string() {
        Keys::Strs(
            flat.str()
                .map_err(|e| Error::input(path, Some(items_col), e.to_string()))?
                .iter()
                .map(|v| v.unwrap_or_default().to_owned())
                .collect(),
        )
    } else {
        return Err(Error::input(
            path,
            Some(items_col),
            format!("expected a list of integers or strings, found list of {inner}"),
        ));
    };
    let (items, _, flat_idx) = index_keys(flat_keys);
    let mut lists = vec![Vec::new(); users.len()];
    let mut at = 0;
    for (row, &u) in user_idx.iter().enumerate() {
        lists[u as usize] = flat_idx[at..at + lens[row]].to_vec();
        at += lens[row];
    }
    Ok(Dataset::Interactions(Interactions { users, user_numbers, items, lists, weights: None }))
}

fn read_text(path: &Path, df: &DataFrame, text: &str, id: Option<&str>) -> Result<Dataset> {
    let s = column(path, df, text)?;
    let ca = s.str().map_err(|_| Error::input(path, Some(text), format!("expected text, found {}", s.dtype())))?;
    let texts: Vec<String> = ca.iter().map(|v| v.unwrap_or_default().to_owned()).collect();
    let ids = row_ids(path, df, id)?;
    Ok(Dataset::Text(TextCorpus { ids, texts }))
}

fn row_ids(path: &Path, df: &DataFrame, id: Option<&str>) -> Result<Vec<String>> {
    match id {
        None => Ok((0..df.height()).map(|r| r.to_string()).collect()),
        Some(id) => {
            let ids: Vec<String> = match keys(path, df, id)? {
                Keys::Ints(v) => v.iter().map(i64::to_string).collect(),
                Keys::Strs(v) => v,
            };
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = ids.iter().find(|i| !seen.insert(*i)) {
                return Err(Error::input(path, Some(id), format!("id '{dup}' appears on more than one row")));
            }
            Ok(ids)
        }
    }
}

fn numeric_column(path: &Path, df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let s = column(path, df, name)?;
    if !s.dtype().is_primitive_numeric() {
        return Err(Error::input(path, Some(name), format!("expected numbers, found {}", s.dtype())));
    }
    let s = s.cast(&DataType::Float64).map_err(|e| Error::input(path, Some(name), e.to_string()))?;
    let v: Vec<f64> = s.f64().map_err(|e| Error::input(path, Some(name), e.to_string()))?.into_no_null_iter().collect();
    if let Some(r) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::input(path, Some(name), format!("value {} at data row {} is not finite", v[r], r + 1)));
    }
    Ok(v)
}

fn read_numeric(
    path: &Path,
    df: &DataFrame,
    columns: Option<&[String]>,
    id: Option<&str>,
    exclude: &[String],
) -> Result<Dataset> {
    for e in exclude {
        if df.column(e).is_err() {
            return Err(Error::input(path, Some(e), "no such column (named in input.exclude)"));
        }
    }
    let names: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => df
            .columns()
            .iter()
            .filter(|c| c.dtype().is_primitive_numeric() && Some(c.name().as_str()) != id)
            .filter(|c| !exclude.iter().any(|e| e == c.name().as_str()))
            .map(|c| c.name().to_string())
            .collect(),
    };
    if names.is_empty() {
        return Err(Error::input(path, None, "no numeric columns to use"));
    }
    let rows = df.height();
    let mut values = vec![0.0; rows * names.len()];
    for (j, name) in names.iter().enumerate() {
        for (r, v) in numeric_column(path, df, name)?.into_iter().enumerate() {
            values[r * names.len() + j] = v;
        }
    }
    Ok(Dataset::Numeric(NumericTable { ids: row_ids(path, df, id)?, columns: names, rows, values }))
}

/// Reads an item → category file (eval.labels). Item keys are written as the interactions' item labels are.
pub fn read_labels(plan: &LabelsFile) -> Result<HashMap<String, String>> {
    let input = InputSpec::file(
        plan.path.clone(),
        plan.format,
        InputColumns::Text { text: plan.category.clone(), id: Some(plan.item.clone()) },
        b',',
    );
    let cols = [plan.item.clone(), plan.category.clone()];
    let df = read_frame(&input, Some(&cols))?;
    let path = plan.path.as_path();
    let items: Vec<String> = match keys(path, &df, &plan.item)? {
        Keys::Ints(v) => v.iter().map(i64::to_string).collect(),
        Keys::Strs(v) => v,
    };
    let cats: Vec<String> = match keys(path, &df, &plan.category)? {
        Keys::Ints(v) => v.iter().map(i64::to_string).collect(),
        Keys::Strs(v) => v,
    };
    Ok(items.into_iter().zip(cats).collect())
}

/// One row of an `eval.senses` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenseRow {
    pub text: String,
    /// Lowercased.
    pub word: String,
    pub sense: String,
}

/// Reads an `eval.senses` file: columns `text`, `word`, `sense` (strings, no nulls).
pub fn read_senses(path: &Path, format: Format) -> Result<Vec<SenseRow>> {
    let df = side_frame(path, format, &["text", "word", "sense"])?;
    let strings = |name: &str| -> Result<Vec<String>> {
        let s = column(path, &df, name)?;
        let ca = s.str().map_err(|_| Error::input(path, Some(name), format!("expected text, found {}", s.dtype())))?;
        Ok(ca.iter().map(|v| v.unwrap_or_default().to_owned()).collect())
    };
    let (text, word, sense) = (strings("text")?, strings("word")?, strings("sense")?);
    if let Some(r) = word.iter().position(|w| w.trim().is_empty() || w.trim().contains(char::is_whitespace)) {
        return Err(Error::input(
            path,
            Some("word"),
            format!("data row {}: expected one word, found '{}'", r + 1, word[r]),
        ));
    }
    Ok(text
        .into_iter()
        .zip(word)
        .zip(sense)
        .map(|((text, word), sense)| SenseRow { text, word: word.trim().to_lowercase(), sense })
        .collect())
}

/// Reads item pairs with a similarity score (columns item_a, item_b, score), e.g. human judgements.
pub fn read_pairs(path: &Path, format: Format) -> Result<Vec<(String, String, f64)>> {
    let df = side_frame(path, format, &["item_a", "item_b", "score"])?;
    let labels = |name: &str| -> Result<Vec<String>> {
        Ok(match keys(path, &df, name)? {
            Keys::Ints(v) => v.iter().map(i64::to_string).collect(),
            Keys::Strs(v) => v,
        })
    };
    let (a, b) = (labels("item_a")?, labels("item_b")?);
    let score = numeric_column(path, &df, "score")?;
    Ok(a.into_iter().zip(b).zip(score).map(|((a, b), s)| (a, b, s)).collect())
}

/// The number of data rows in one of the input's files: from the footer for Parquet, by reading the file's first
/// configured column for CSV (quoted fields may hold line breaks).
pub fn file_rows(input: &InputSpec, file: &Path) -> Result<usize> {
    if input.format == Format::Parquet {
        return crate::data::row_count(file);
    }
    let column = match &input.columns {
        InputColumns::Long { user, .. } | InputColumns::List { user, .. } => Some(user.clone()),
        InputColumns::Text { text, .. } => Some(text.clone()),
        InputColumns::Numeric { .. } => None,
    };
    let one = InputSpec { files: vec![file.to_owned()], ..input.clone() };
    let wanted = column.map(|c| vec![c]);
    Ok(read_frame(&one, wanted.as_deref())?.height())
}

/// The training pairs of `finetune.pairs`: each row's anchor, positive and (optional) hard negative, as texts or as
/// row ids of the input (`by_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingPairs {
    pub by_id: bool,
    pub anchor: Vec<String>,
    pub positive: Vec<String>,
    pub negative: Option<Vec<String>>,
}

/// Reads a `finetune.pairs` file: columns `anchor`, `positive` (and `negative`) of texts, or `anchor_id`,
/// `positive_id` (and `negative_id`) of row ids. A null (a one-sided row) or an empty text is an error naming the
/// column and the data row.
pub fn read_training_pairs(path: &Path, format: Format) -> Result<TrainingPairs> {
    let layouts: [(&[&str], bool); 4] = [
        (&["anchor", "positive", "negative"], false),
        (&["anchor", "positive"], false),
        (&["anchor_id", "positive_id", "negative_id"], true),
        (&["anchor_id", "positive_id"], true),
    ];
    let mut found = None;
    for (cols, by_id) in layouts {
        if let Ok(df) = side_frame(path, format, cols) {
            found = Some((df, cols, by_id));
            break;
        }
    }
    let Some((df, cols, by_id)) = found else {
        return Err(Error::input(
            path,
            None,
            "expected columns anchor, positive (and optionally negative) holding texts, or anchor_id, positive_id \
             (and optionally negative_id) holding row ids of the input",
        ));
    };
    let values = |name: &str| -> Result<Vec<String>> {
        let v: Vec<String> = if by_id {
            match keys(path, &df, name)? {
                Keys::Ints(v) => v.iter().map(i64::to_string).collect(),
                Keys::Strs(v) => v,
            }
        } else {
            let s = column(path, &df, name)?;
            let ca =
                s.str().map_err(|_| Error::input(path, Some(name), format!("expected text, found {}", s.dtype())))?;
            ca.iter().map(|v| v.unwrap_or_default().to_owned()).collect()
        };
        if let Some(r) = v.iter().position(|t| t.trim().is_empty()) {
            return Err(Error::input(path, Some(name), format!("data row {}: empty", r + 1)));
        }
        Ok(v)
    };
    let negative = cols.get(2).map(|c| values(c)).transpose()?;
    Ok(TrainingPairs { by_id, anchor: values(cols[0])?, positive: values(cols[1])?, negative })
}
