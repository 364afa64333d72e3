//! The wgpu backend, in the files that each hold one part of it:
//!
//! * `adapter.rs`: wgpu instances (the loader kept quiet) and [`adapter::AdapterReport`];
//! * `context.rs`: `GpuContext`, an opened adapter (device, queue, limits) and its choices;
//! * `buffers.rs`: device buffers (private lengths), uploads, read-backs, the split-k scratch;
//! * `kernels.rs`: the one table of WGSL kernels ([`kernels::Kernel`] and its entry), `kernel_source.rs` the
//!   include / generate directives that keep kernel sources free of copies;
//! * `params.rs`: each kernel's parameters as a `Pod` struct mirroring its WGSL struct;
//! * `pipelines.rs`: pipelines built on first use and the one generic dispatch (the unchecked GEMM kernels only
//!   through `gemm.rs`, which checks their operands);
//! * `recorder.rs`: [`Gpu`], the context and the command encoder operations record into;
//! * `linalg_ops.rs`, `tensor_store.rs`, `model_ops.rs`, `encoder_ops.rs`: the four operation families of
//!   [`crate::backend::Backend`], each operation's checks and dispatch in one place;
//! * `profile.rs`: kernel timings (`EMBJOB_GPU_PROFILE=1`).
//!
//! Nothing outside this module touches a device buffer or dispatches a kernel: tests and callers go through the
//! `Backend` traits (and [`Gpu::matmul_using`] to pick a GEMM kernel), which check every operand.

pub mod adapter;
mod buffers;
mod context;
mod encoder_grad_ops;
mod encoder_ops;
mod gemm;
pub mod kernel_source;
pub mod kernels;
mod linalg_ops;
mod model_ops;
pub mod params;
mod pipelines;
mod profile;
mod recorder;
mod tensor_store;

use buffers::{GpuBuf, GpuIdx};
use context::GpuContext;

pub use gemm::GemmKernel;
pub use recorder::Gpu;
