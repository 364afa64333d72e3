//! The only module that uses polars: reading inputs and writing Parquet outputs.

mod parquet_check;
mod read;
mod read_back;
mod write;

pub use read::{
    file_rows, read_input, read_labels, read_pairs, read_run_labels, read_senses, read_text_column, SenseRow,
};
pub use read_back::{find_table, for_each_slice, read_loadings, row_count, Loadings};
pub use write::{write_parquet, PartWriter};
