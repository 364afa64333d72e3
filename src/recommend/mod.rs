//! The embedding-layer recommender (the food example): split, batches, the network, sampled negatives, training.

pub mod network;
pub mod sampling;
pub mod split;
pub mod train;
