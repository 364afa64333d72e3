//! Host linear algebra: dense and sparse matrices, the block Lanczos eigensolver, the seeded generator.

pub mod dense;
pub mod krylov;
pub mod rng;
pub mod sparse;
