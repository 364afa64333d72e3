//! Output tables as plain columns: what every stage hands to the writer in [`crate::data::write`]. Integer columns are
//! signed (Spark has no unsigned types); vectors are fixed-size lists of float32.

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnData {
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// Nullable 64-bit integers (e.g. the `index` of a metric that has none).
    OptI64(Vec<Option<i64>>),
    F64(Vec<f64>),
    Str(Vec<String>),
    /// `len × dim` float32 values, row-major: one fixed-size list per row.
    Vectors {
        dim: usize,
        values: Vec<f32>,
    },
}

impl ColumnData {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            ColumnData::I32(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::OptI64(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::Str(v) => v.len(),
            ColumnData::Vectors { dim, values } => values.len().checked_div(*dim).unwrap_or(0),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A named table of equally long columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, ColumnData)>,
}

impl Table {
    /// A table from `(name, column)` pairs.
    pub fn new(columns: Vec<(&str, ColumnData)>) -> Table {
        Table { columns: columns.into_iter().map(|(n, c)| (n.to_owned(), c)).collect() }
    }

    /// The column called `name`, if there is one.
    pub fn column(&self, name: &str) -> Option<&ColumnData> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// Number of rows (of the first column).
    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.1.len())
    }
}

/// The table `metrics.parquet` holds: run_id, stage, metric, index, value.
pub fn metrics_table(metrics: &crate::runtime::metrics::Metrics, run_id: &str) -> Table {
    let rows = &metrics.rows;
    Table::new(vec![
        ("run_id", ColumnData::Str(vec![run_id.to_owned(); rows.len()])),
        ("stage", ColumnData::Str(rows.iter().map(|m| m.stage.clone()).collect())),
        ("metric", ColumnData::Str(rows.iter().map(|m| m.metric.clone()).collect())),
        ("index", ColumnData::OptI64(rows.iter().map(|m| m.index).collect())),
        ("value", ColumnData::F64(rows.iter().map(|m| m.value).collect())),
    ])
}
