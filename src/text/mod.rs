//! Documents to counts: tokens with Python's regex semantics, bag-of-words matrices equal to scikit-learn's.

pub mod token_pattern;
pub mod vectorizer;
