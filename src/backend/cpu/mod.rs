//! The CPU backend: the reference every other backend is tested against, and what runs where no GPU exists.
//! Its operations are split by family as the GPU's are: each family's trait implementation in a file of its name
//! (`linalg_ops.rs`, `tensor_store.rs`, `model_ops.rs`, `encoder_ops.rs`, `encoder_grad_ops.rs`), and the kernels on plain slices by kernel
//! family, mirroring `shaders/` (`gemm.rs`, `softmax_xent.rs`, `embedding_bag.rs`, `elementwise.rs`, `optim.rs`,
//! `sampled.rs`, `ranking.rs`, `neighbors.rs`, `encoder.rs`, `encoder_grad.rs` (the encoder's backward pass and AdamW); `sparse.rs` for PCA's sparse products). The kernels are
//! the CPU twins each GPU kernel is tested against, re-exported here. Row-parallel with rayon where rows are
//! independent; every sum runs in a fixed order, so results do not depend on the thread count.

mod elementwise;
mod embedding_bag;
mod encoder;
pub mod encoder_grad;
mod encoder_grad_ops;
mod encoder_ops;
mod gemm;
mod linalg_ops;
mod model_ops;
mod neighbors;
mod optim;
mod ranking;
mod sampled;
mod simd;
mod softmax_xent;
mod sparse;
mod tensor_store;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use elementwise::{activate, bias_act, column_sums, erf_approx, relu_backward};
pub use embedding_bag::{embedding_bag, embedding_bag_backward};
pub use encoder::{add_layernorm, attention, embed_layernorm, l2_normalize, layernorm_row, pool};
pub use encoder_grad::{activation_derivative, AttnDims};
pub use gemm::{matmul, matmul_f16_inputs, matmul_rows_invariant};
pub use neighbors::{cosine_top_k, cosine_top_k_blocked, NEIGHBOR_BLOCK};
pub use optim::{adam, adam_selected, sgd};
pub use ranking::{rank_and_loss, target_ranks, RANK_BLOCK};
pub use sampled::{gather, sampled_softmax_xent};
pub use simd::exp_nonpositive;
pub use softmax_xent::{output_layer_xent, softmax_xent, OutputLayerIn, OutputLayerOut, OUTPUT_BLOCK};

use super::{Backend, BackendKind, Indices, Tensor};
use crate::error::{Error, Result};

/// Whether a slice of `len` values holds the product of `dims` (checked arithmetic: a product that overflows is
/// held by nothing). Every length that guards a raw view or pointer of the CPU kernels goes through here.
pub(crate) fn holds(len: usize, dims: &[usize]) -> bool {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_some_and(|need| need <= len)
}

/// The product of `dims`, or an internal error naming `what` when it overflows.
pub(crate) fn len_of(dims: &[usize], what: &str) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Internal(format!("{what}: a shape of {dims:?} overflows")))
}

/// The CPU backend. Its resident tensors are host vectors behind read-write locks, freed with their last handle.
#[derive(Debug, Default)]
pub struct Cpu;

impl Cpu {
    pub fn new() -> Cpu {
        Cpu
    }
}

impl Backend for Cpu {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
}

/// The CPU backend's tensor and index storage.
pub(super) type F = RwLock<Vec<f32>>;
pub(super) type U = RwLock<Vec<u32>>;

fn poisoned<T>(_: T) -> Error {
    Error::Internal("cpu backend: a tensor poisoned by a panic".into())
}

pub(super) fn r(t: &Tensor) -> Result<RwLockReadGuard<'_, Vec<f32>>> {
    t.storage::<F>("cpu")?.read().map_err(poisoned)
}

pub(super) fn w(t: &Tensor) -> Result<RwLockWriteGuard<'_, Vec<f32>>> {
    t.storage::<F>("cpu")?.write().map_err(poisoned)
}

/// The used part of an index buffer.
pub(super) fn ri(t: &Indices) -> Result<IndexView<'_>> {
    Ok(IndexView { guard: t.storage::<U>("cpu")?.read().map_err(poisoned)?, len: t.len() })
}

pub(super) struct IndexView<'a> {
    guard: RwLockReadGuard<'a, Vec<u32>>,
    len: usize,
}

impl std::ops::Deref for IndexView<'_> {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.guard[..self.len.min(self.guard.len())]
    }
}
