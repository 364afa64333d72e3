//! The only module that uses polars: reading inputs and writing Parquet outputs.

mod read;
mod write;

pub use read::read_input;
pub use write::write_parquet;
