//! The only module that uses polars: reading inputs and writing Parquet outputs.

mod parquet_check;
mod read;
mod write;

pub use read::{read_input, read_labels, read_pairs, read_senses, read_text_column, SenseRow};
pub use write::{write_parquet, PartWriter};
