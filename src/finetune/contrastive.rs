//! sentence-transformers' MultipleNegativesRankingLoss on a [`Backend`]: a batch of B anchors followed by their B
//! positives (and any hard negatives, B at a time), pooled and scaled to unit length; scores `scale · cos(aᵢ, cⱼ)`
//! of every anchor against every candidate; cross-entropy with anchor i's positive (candidate i) as its target,
//! averaged over the anchors. Its gradient flows back to the last hidden state.

use crate::backend::{Backend, Indices, MatDims, PoolMode, Tensor};
use crate::error::{Error, Result};

/// The loss's tensors for batches of up to `sequences` sequences of `dim` values.
pub struct Contrastive {
    sequences: usize,
    dim: usize,
    pooled: Tensor,
    unit: Tensor,
    anchors: Tensor,
    candidates: Tensor,
    scores: Tensor,
    losses: Tensor,
    d_anchors: Tensor,
    d_candidates: Tensor,
    d_unit: Tensor,
    d_pooled: Tensor,
    targets: Indices,
}

impl Contrastive {
    pub fn new(be: &dyn Backend, sequences: usize, dim: usize) -> Result<Contrastive> {
        let n = sequences.max(2);
        let z = |len: usize| be.zeros(len);
        Ok(Contrastive {
            sequences: n,
            dim,
            pooled: z(n * dim)?,
            unit: z(n * dim)?,
            anchors: z(n * dim)?,
            candidates: z(n * dim)?,
            scores: z(n * n)?,
            losses: z(n)?,
            d_anchors: z(n * dim)?,
            d_candidates: z(n * dim)?,
            d_unit: z(n * dim)?,
            d_pooled: z(n * dim)?,
            targets: be.index_buffer(n)?,
        })
    }

    /// The mean loss of a batch whose first `anchors` sequences are the anchors and the rest their candidates, from
    /// the last hidden state `hidden` (batch · seq × dim, `lens` real tokens each); writes the gradient of the
    /// loss with respect to `hidden` into `d_hidden`.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &mut self,
        be: &dyn Backend,
        (hidden, lens, shape): (&Tensor, &Indices, crate::backend::SeqShape),
        anchors: usize,
        mode: PoolMode,
        scale: f32,
        d_hidden: &Tensor,
    ) -> Result<f64> {
        let (n, d) = (shape.batch, self.dim);
        let cands = n.saturating_sub(anchors);
        if anchors == 0 || cands < anchors || cands % anchors != 0 || n > self.sequences || shape.cols != d {
            return Err(Error::Internal(format!(
                "contrastive loss: {anchors} anchors among {n} sequences (of at most {})",
                self.sequences
            )));
        }
        be.pool(hidden, lens, shape, mode, &self.pooled)?;
        be.copy(&self.pooled, 0, &self.unit, 0, n * d)?;
        be.l2_normalize(&self.unit, n, d)?;
        be.copy(&self.unit, 0, &self.anchors, 0, anchors * d)?;
        be.copy(&self.unit, anchors * d, &self.candidates, 0, cands * d)?;
        let dims = MatDims { m: anchors, n: cands, k: d };
        be.matmul(&self.anchors, false, &self.candidates, true, &self.scores, dims, 0.0)?;
        be.scale(&self.scores, anchors * cands, scale)?;
        be.write_indices(&mut self.targets, &(0..anchors as u32).collect::<Vec<_>>())?;
        be.softmax_xent(&self.scores, &self.targets, anchors, cands, &self.losses)?;
        // d(scaled scores) → d(cosines).
        be.scale(&self.scores, anchors * cands, scale)?;
        be.matmul(
            &self.scores,
            false,
            &self.candidates,
            false,
            &self.d_anchors,
            MatDims { m: anchors, n: d, k: cands },
            0.0,
        )?;
        be.matmul(
            &self.scores,
            true,
            &self.anchors,
            false,
            &self.d_candidates,
            MatDims { m: cands, n: d, k: anchors },
            0.0,
        )?;
        be.copy(&self.d_anchors, 0, &self.d_unit, 0, anchors * d)?;
        be.copy(&self.d_candidates, 0, &self.d_unit, anchors * d, cands * d)?;
        be.l2_normalize_backward(&self.pooled, &self.d_unit, n, d, &self.d_pooled)?;
        be.pool_backward(&self.d_pooled, lens, shape, mode, d_hidden)?;
        let losses = be.read(&self.losses)?;
        Ok(losses.iter().take(anchors).map(|&l| f64::from(l)).sum::<f64>() / anchors as f64)
    }
}
