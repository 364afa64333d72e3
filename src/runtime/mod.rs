//! What running code shares, below every algorithm: stop requests, progress reports, metrics, memory budgets.

pub mod interrupt;
pub mod memory;
pub mod metrics;
pub mod progress;
