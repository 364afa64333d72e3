//! Training batches of contrastive fine-tuning, drawn with a seed. From labels: a share of the labelled documents is
//! held out first; each epoch every other document of a category with at least two such documents is an anchor
//! once, in a shuffled order, with a positive drawn uniformly from the rest of its category; batches are filled in
//! that order with no category twice in a batch (an anchor whose category is already in the batch waits for the
//! next one), so that no in-batch negative shares its anchor's category; the epoch ends when a batch would hold
//! fewer than half the batch size (only a few large categories left: their remaining anchors are not used that
//! epoch). From a pairs file: each epoch the pairs in a shuffled order, in batches; a batch of fewer than two
//! anchors (nothing to rank against) is dropped.

use crate::linalg::rng::SplitMix;

/// One training example: indices into the list of texts the stage trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub anchor: usize,
    pub positive: usize,
    pub negative: Option<usize>,
}

fn shuffle<T>(v: &mut [T], rng: &mut SplitMix) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i + 1);
        v.swap(i, j);
    }
}

/// The documents held out of `labelled` (document indices): `round(fraction · n)` of them, drawn with `seed`,
/// ascending.
pub fn held_out(labelled: &[usize], fraction: f64, seed: u64) -> Vec<usize> {
    let mut order = labelled.to_vec();
    shuffle(&mut order, &mut SplitMix::new(seed ^ 0x686f_6c64));
    let n = ((labelled.len() as f64) * fraction).round() as usize;
    let mut out = order[..n.min(order.len())].to_vec();
    out.sort_unstable();
    out
}

/// Batches of `batch` examples for `epochs` epochs from documents and their categories (`docs[i]` has category
/// `cats[i]`), as the module says.
pub fn label_batches(docs: &[usize], cats: &[u32], epochs: usize, batch: usize, seed: u64) -> Vec<Vec<Example>> {
    let mut by_cat: std::collections::BTreeMap<u32, Vec<usize>> = std::collections::BTreeMap::new();
    for (&d, &c) in docs.iter().zip(cats) {
        by_cat.entry(c).or_default().push(d);
    }
    let mut rng = SplitMix::new(seed ^ 0x7061_6972);
    let anchors: Vec<(usize, u32)> =
        docs.iter().zip(cats).filter(|(_, c)| by_cat[c].len() >= 2).map(|(&d, &c)| (d, c)).collect();
    let mut out = Vec::new();
    for _ in 0..epochs {
        let mut order = anchors.clone();
        shuffle(&mut order, &mut rng);
        let mut waiting: std::collections::VecDeque<(usize, u32)> = order.into();
        while !waiting.is_empty() {
            let mut taken = std::collections::BTreeSet::new();
            let mut b = Vec::with_capacity(batch);
            let mut rest = std::collections::VecDeque::with_capacity(waiting.len());
            while let Some((d, c)) = waiting.pop_front() {
                if b.len() < batch && taken.insert(c) {
                    let peers = &by_cat[&c];
                    let mut p = peers[rng.below(peers.len() - 1)];
                    if p == d {
                        p = peers[peers.len() - 1];
                    }
                    b.push(Example { anchor: d, positive: p, negative: None });
                } else {
                    rest.push_back((d, c));
                }
            }
            waiting = rest;
            // A batch of fewer than half the batch size (at least 2) means only a few large categories are left:
            // the epoch ends there, and those anchors wait for the next epoch's draw.
            if b.len() >= (batch / 2).max(2) {
                out.push(b);
            } else {
                break;
            }
        }
    }
    out
}

/// Batches of `batch` examples for `epochs` epochs over `examples` in a shuffled order each epoch.
pub fn file_batches(examples: &[Example], epochs: usize, batch: usize, seed: u64) -> Vec<Vec<Example>> {
    let mut rng = SplitMix::new(seed ^ 0x6669_6c65);
    let mut out = Vec::new();
    for _ in 0..epochs {
        let mut order = examples.to_vec();
        shuffle(&mut order, &mut rng);
        out.extend(order.chunks(batch.max(1)).filter(|b| b.len() >= 2).map(<[Example]>::to_vec));
    }
    out
}
