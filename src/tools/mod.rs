//! Tooling beside the product: benchmarks against the peers and the generators of synthetic data.

pub mod bench;
pub mod catalogue;
pub mod foodgen;
