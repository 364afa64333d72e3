//! A run made visible: plots, report.html, and `embjob show` / `embjob neighbors` reading a finished run.

pub mod inspect;
pub mod plots;
pub mod report;
