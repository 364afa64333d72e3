//! The wgpu backend, in the files that each hold one part of it:
//!
//! * `context.rs`: [`GpuContext`], an opened adapter (device, queue, limits) and its choices;
//! * `buffers.rs`: device buffers, uploads, read-backs, the split-k scratch;
//! * `kernels.rs`: the one registry of WGSL kernels ([`kernels::Kernel`] and its entry), `kernel_source.rs` the
//!   include / generate directives that keep kernel sources free of copies;
//! * `params.rs`: each kernel's parameters as a `Pod` struct mirroring its WGSL struct;
//! * `pipelines.rs`: pipelines built on first use and the one generic dispatch;
//! * `gemm.rs`, `ops.rs` and `encoder_ops.rs`: the device operations, each with a CPU twin in `cpu_kernels` and a
//!   parity test;
//! * `backend.rs`: [`Gpu`], the [`super::Backend`] trait on top of these (resident tensors own their buffers);
//! * `profile.rs`: kernel timings (`EMBJOB_GPU_PROFILE=1`).

mod backend;
mod buffers;
mod context;
mod encoder_ops;
mod gemm;
pub mod kernel_source;
pub mod kernels;
mod ops;
pub mod params;
mod pipelines;
mod profile;

pub use backend::Gpu;
pub use buffers::{GpuBuf, GpuIdx};
pub use context::GpuContext;
pub use gemm::{Epilogue, GemmKernel};
pub use pipelines::{groups_1d, variant};
