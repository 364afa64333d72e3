//! Turns stage results into the output tables (schemas documented in the README).

use crate::bow::Bow;
use crate::table::{ColumnData, Table};

/// `vocabulary.parquet`: token_id, token, df, count.
pub fn vocabulary(bow: &Bow) -> Table {
    Table::new(vec![
        ("token_id", ColumnData::I32((0..bow.tokens.len() as i32).collect())),
        ("token", ColumnData::Str(bow.tokens.clone())),
        ("df", ColumnData::I64(bow.df.iter().map(|&d| d as i64).collect())),
        ("count", ColumnData::I64(bow.count.iter().map(|&d| d as i64).collect())),
    ])
}

/// `bow.parquet`: row_id, row (the input's id of that row), token_id, value; one row per stored entry.
pub fn bow_entries(bow: &Bow, row_ids: &[String]) -> Table {
    let m = &bow.matrix;
    let mut row_id = Vec::with_capacity(m.nnz());
    let mut row = Vec::with_capacity(m.nnz());
    for (r, (span, id)) in m.indptr.windows(2).zip(row_ids).enumerate() {
        let n = span[1] - span[0];
        row_id.extend(std::iter::repeat_n(r as i64, n));
        row.extend(std::iter::repeat_n(id.clone(), n));
    }
    Table::new(vec![
        ("row_id", ColumnData::I64(row_id)),
        ("row", ColumnData::Str(row)),
        ("token_id", ColumnData::I32(m.indices.iter().map(|&c| c as i32).collect())),
        ("value", ColumnData::F64(m.values.clone())),
    ])
}
