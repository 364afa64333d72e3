//! Bag-of-words: tokenizer, vocabulary with document-frequency bounds and a feature cap, and count / binary / tf-idf
//! weighting, all as scikit-learn's `CountVectorizer` and `TfidfTransformer` define them. The matrix stays sparse.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::linalg::sparse::Csr;

/// Tokenizer and vocabulary options (validated by the plan).
#[derive(Debug, Clone)]
pub struct BowParams {
    pub lowercase: bool,
    pub token_pattern: crate::text::token_pattern::TokenPattern,
    pub stop_words: Vec<String>,
    pub min_df: DfBound,
    pub max_df: DfBound,
    pub max_features: Option<usize>,
    pub weighting: Weighting,
}

/// A document-frequency bound: an integer is a document count, a float a fraction of the documents.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DfBound {
    Count(u64),
    Fraction(f64),
}

impl std::fmt::Display for DfBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DfBound::Count(c) => write!(f, "{c} documents"),
            DfBound::Fraction(x) => write!(f, "{x:?} of the documents"),
        }
    }
}

impl<'de> Deserialize<'de> for DfBound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DfBound;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a document count (integer >= 0) or a fraction of the documents (float in [0, 1])")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<DfBound, E> {
                u64::try_from(v)
                    .map(DfBound::Count)
                    .map_err(|_| E::custom(format!("a document count cannot be negative (got {v})")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<DfBound, E> {
                Ok(DfBound::Count(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<DfBound, E> {
                if (0.0..=1.0).contains(&v) {
                    Ok(DfBound::Fraction(v))
                } else {
                    Err(E::custom(format!("a fraction of the documents must lie in [0, 1] (got {v})")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// How BoW values are weighted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Weighting {
    /// Raw counts.
    #[default]
    Count,
    /// 1 where a token occurs.
    Binary,
    /// scikit-learn's TfidfTransformer defaults: smooth idf, l2-normalised rows.
    Tfidf,
}

/// The vocabulary and the document × token matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Bow {
    /// Kept tokens in vocabulary order (token_id = position): sorted by code point, as scikit-learn sorts.
    pub tokens: Vec<String>,
    /// Documents containing each token.
    pub df: Vec<u64>,
    /// Occurrences of each token over all documents.
    pub count: Vec<u64>,
    /// Weighted document × token matrix.
    pub matrix: Csr,
    /// What pruning removed (reported as metrics).
    pub stats: BowStats,
}

/// Counts reported after building the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BowStats {
    pub documents: usize,
    /// Distinct tokens before pruning.
    pub tokens_seen: usize,
    /// Tokens removed by min_df / max_df.
    pub pruned_by_df: usize,
    /// Tokens removed by max_features.
    pub pruned_by_max_features: usize,
    /// Stop-word occurrences dropped.
    pub stop_words_dropped: u64,
    /// Documents with no kept token.
    pub empty_documents: usize,
}

/// Splits `text` into tokens the way scikit-learn's default analyzer does: optional lowercasing (Python's
/// `str.lower`, which Rust's `to_lowercase` equals, final sigma included), the token pattern's matches with Python's
/// meaning of `\w` and `\b` (its group when it has one), stop words removed by the caller.
pub fn tokenize<'t>(plan: &BowParams, text: &'t str, lowered: &'t mut String) -> Result<Vec<&'t str>> {
    let text: &str = if plan.lowercase {
        *lowered = text.to_lowercase();
        lowered.as_str()
    } else {
        text
    };
    plan.token_pattern
        .tokens(text)
        .map_err(|e| Error::Stage { stage: "bow", message: format!("bow.token_pattern: {e}") })
}

/// Documents as token counts over a sorted universe of tokens, before pruning and weighting: what a shard of a
/// sharded run computes for its documents, and what the merge concatenates (see [`DocCounts::concat`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DocCounts {
    /// Tokens sorted by code point (token id = position).
    pub universe: Vec<String>,
    /// Per document, (token id, count) in id order; stop words removed.
    pub docs: Vec<Vec<(u32, u64)>>,
    /// Stop-word occurrences dropped.
    pub stop_words_dropped: u64,
}

impl DocCounts {
    /// The documents of `parts` in order, over the sorted union of their universes. Each part's ids map to the
    /// union in the same order, so every document's pairs stay in id order and equal what counting all documents
    /// at once gives.
    pub fn concat(parts: Vec<DocCounts>) -> DocCounts {
        let mut universe: Vec<String> = parts.iter().flat_map(|p| p.universe.iter().cloned()).collect();
        universe.sort_unstable();
        universe.dedup();
        let mut docs = Vec::with_capacity(parts.iter().map(|p| p.docs.len()).sum());
        let mut stop_words_dropped = 0;
        for part in parts {
            let map: Vec<u32> =
                part.universe.iter().map(|t| universe.binary_search(t).map_or(u32::MAX, |i| i as u32)).collect();
            stop_words_dropped += part.stop_words_dropped;
            docs.extend(part.docs.into_iter().map(|d| d.into_iter().map(|(t, c)| (map[t as usize], c)).collect()));
        }
        DocCounts { universe, docs, stop_words_dropped }
    }
}

/// BoW of free-text documents.
pub fn from_texts(plan: &BowParams, texts: &[String]) -> Result<Bow> {
    from_counts(plan, count_texts(plan, texts)?)
}

/// The token counts of free-text documents: tokenized, stop words dropped, ids in sorted token order.
pub fn count_texts(plan: &BowParams, texts: &[String]) -> Result<DocCounts> {
    let stop: HashSet<&str> = plan.stop_words.iter().map(String::as_str).collect();
    let mut ids: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut stop_dropped = 0u64;
    let mut docs: Vec<Vec<u32>> = Vec::with_capacity(texts.len());
    let mut lowered = String::new();
    for text in texts {
        let mut doc = Vec::new();
        for tok in tokenize(plan, text, &mut lowered)? {
            if stop.contains(tok) {
                stop_dropped += 1;
                continue;
            }
            let id = match ids.get(tok) {
                Some(&id) => id,
                None => {
                    let id = names.len() as u32;
                    ids.insert(tok.to_owned(), id);
                    names.push(tok.to_owned());
                    id
                }
            };
            doc.push(id);
        }
        docs.push(doc);
    }
    // Re-number in sorted order so that token ids follow the vocabulary order.
    let mut order: Vec<u32> = (0..names.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| names[a as usize].cmp(&names[b as usize]));
    let mut rank = vec![0u32; names.len()];
    for (r, &id) in order.iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    let sorted: Vec<String> = order.iter().map(|&id| std::mem::take(&mut names[id as usize])).collect();
    for doc in &mut docs {
        for t in doc.iter_mut() {
            *t = rank[*t as usize];
        }
    }
    let mut counts = count_ids(plan, sorted, &docs);
    counts.stop_words_dropped += stop_dropped;
    Ok(counts)
}

/// BoW of documents already given as ids into a sorted `universe` of tokens (the items of long and list layouts).
/// Stop words, min_df, max_df, max_features and weighting apply; lowercasing and the token pattern do not.
pub fn from_token_ids(plan: &BowParams, universe: Vec<String>, docs: &[Vec<u32>]) -> Result<Bow> {
    from_counts(plan, count_ids(plan, universe, docs))
}

/// Per document, its (token id, count) pairs in id order, stop words dropped.
fn count_ids(plan: &BowParams, universe: Vec<String>, docs: &[Vec<u32>]) -> DocCounts {
    let stop: HashSet<&str> = plan.stop_words.iter().map(String::as_str).collect();
    let is_stop: Vec<bool> = universe.iter().map(|t| stop.contains(t.as_str())).collect();
    let mut stop_dropped = 0u64;
    let mut doc_counts: Vec<Vec<(u32, u64)>> = Vec::with_capacity(docs.len());
    for doc in docs {
        let mut ids: Vec<u32> = doc.iter().copied().filter(|&t| !is_stop[t as usize]).collect();
        stop_dropped += (doc.len() - ids.len()) as u64;
        ids.sort_unstable();
        let mut counts: Vec<(u32, u64)> = Vec::new();
        for t in ids {
            match counts.last_mut() {
                Some((last, c)) if *last == t => *c += 1,
                _ => counts.push((t, 1)),
            }
        }
        doc_counts.push(counts);
    }
    DocCounts { universe, docs: doc_counts, stop_words_dropped: stop_dropped }
}

/// The vocabulary (document-frequency bounds, feature cap) and the weighted matrix of counted documents.
pub fn from_counts(plan: &BowParams, counts: DocCounts) -> Result<Bow> {
    let DocCounts { universe, docs: doc_counts, stop_words_dropped: stop_dropped } = counts;
    let n_docs = doc_counts.len();
    let v = universe.len();
    let mut df = vec![0u64; v];
    let mut total = vec![0u64; v];
    for counts in &doc_counts {
        for &(t, c) in counts {
            df[t as usize] += 1;
            total[t as usize] += c;
        }
    }
    let tokens_seen = df.iter().filter(|&&d| d > 0).count();
    let (kept, after_df) = vocabulary(plan, &df, &total, n_docs)?;
    let mut new_id = vec![u32::MAX; v];
    for (i, &t) in kept.iter().enumerate() {
        new_id[t] = i as u32;
    }
    let kept_df: Vec<u64> = kept.iter().map(|&t| df[t]).collect();
    let (rows, empty_documents) = weighted_rows(plan, &doc_counts, &new_id, &kept_df);
    let matrix = Csr::from_rows(kept.len(), &rows);
    let mut universe = universe;
    Ok(Bow {
        tokens: kept.iter().map(|&t| std::mem::take(&mut universe[t])).collect(),
        df: kept_df,
        count: kept.iter().map(|&t| total[t]).collect(),
        matrix,
        stats: BowStats {
            documents: n_docs,
            tokens_seen,
            pruned_by_df: tokens_seen - after_df,
            pruned_by_max_features: after_df - kept.len(),
            stop_words_dropped: stop_dropped,
            empty_documents,
        },
    })
}

/// The tokens kept (ascending token ids): those within the document-frequency bounds, then the `max_features`
/// most frequent of them (ties to the earlier token); and how many the bounds alone kept.
fn vocabulary(plan: &BowParams, df: &[u64], total: &[u64], n_docs: usize) -> Result<(Vec<usize>, usize)> {
    let v = df.len();
    let bound = |b: DfBound| match b {
        DfBound::Count(c) => c as f64,
        DfBound::Fraction(f) => f * n_docs as f64,
    };
    let (lo, hi) = (bound(plan.min_df), bound(plan.max_df));
    if hi < lo {
        return Err(Error::Stage {
            stage: "bow",
            message: format!(
                "bow.max_df ({}) allows fewer documents ({hi}) than bow.min_df ({}) requires ({lo}) with {n_docs} documents",
                plan.max_df, plan.min_df
            ),
        });
    }
    let mut keep: Vec<bool> = (0..v).map(|t| df[t] > 0 && (df[t] as f64) >= lo && (df[t] as f64) <= hi).collect();
    let after_df = keep.iter().filter(|&&k| k).count();
    if let Some(limit) = plan.max_features {
        if after_df > limit {
            // The `limit` most frequent tokens; ties go to the earlier token in vocabulary order (a stable sort).
            let mut kept: Vec<usize> = (0..v).filter(|&t| keep[t]).collect();
            kept.sort_by(|&a, &b| total[b].cmp(&total[a]));
            for &t in &kept[limit..] {
                keep[t] = false;
            }
        }
    }
    let kept: Vec<usize> = (0..v).filter(|&t| keep[t]).collect();
    if kept.is_empty() {
        let tokens_seen = df.iter().filter(|&&d| d > 0).count();
        return Err(Error::Stage {
            stage: "bow",
            message: format!(
                "no token is left after pruning ({tokens_seen} distinct tokens in {n_docs} documents; \
                 bow.min_df = {}, bow.max_df = {}): relax the bounds",
                plan.min_df, plan.max_df
            ),
        });
    }
    Ok((kept, after_df))
}

/// Each document's kept tokens (`new_id`: the vocabulary id of a token, `u32::MAX` when pruned), weighted (counts,
/// binary, or tf-idf with scikit-learn's smooth idf and l2 rows); and how many documents are left empty.
fn weighted_rows(
    plan: &BowParams,
    doc_counts: &[Vec<(u32, u64)>],
    new_id: &[u32],
    kept_df: &[u64],
) -> (Vec<Vec<(u32, f64)>>, usize) {
    let n_docs = doc_counts.len();
    let idf: Vec<f64> = kept_df.iter().map(|&d| ((1.0 + n_docs as f64) / (1.0 + d as f64)).ln() + 1.0).collect();
    let mut empty_documents = 0;
    let rows = doc_counts
        .iter()
        .map(|counts| {
            let mut row: Vec<(u32, f64)> = counts
                .iter()
                .filter(|(t, _)| new_id[*t as usize] != u32::MAX)
                .map(|&(t, c)| {
                    let id = new_id[t as usize];
                    let value = match plan.weighting {
                        Weighting::Count => c as f64,
                        Weighting::Binary => 1.0,
                        Weighting::Tfidf => c as f64 * idf[id as usize],
                    };
                    (id, value)
                })
                .collect();
            if row.is_empty() {
                empty_documents += 1;
            }
            if plan.weighting == Weighting::Tfidf {
                let norm = row.iter().map(|(_, x)| x * x).sum::<f64>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|(_, x)| *x /= norm);
                }
            }
            row
        })
        .collect();
    (rows, empty_documents)
}
