//! The I/O edge and its plain types: the only module that uses polars (reading inputs, writing and reading back
//! Parquet), the hand-off formats, and the plain Rust types read into ([`dataset`]) and written from ([`table`]).

pub mod cache_segments;
pub mod dataset;
pub mod fingerprint;
pub mod input;
mod parquet_check;
mod read;
mod read_back;
pub mod table;
pub mod vector_files;
mod write;

pub use read::{
    file_rows, read_input, read_labels, read_pairs, read_senses, read_text_column, read_training_pairs, SenseRow,
    TrainingPairs,
};
pub use read_back::{find_table, for_each_slice, read_loadings, row_count, Loadings};
pub use write::{write_parquet, PartWriter};
