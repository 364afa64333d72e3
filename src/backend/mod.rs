//! Where the heavy math runs. `device` picks the backend for a run.

pub mod device;

pub use device::{select, AdapterReport, BackendReport};
