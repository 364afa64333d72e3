//! `contextual.compare`: each compared word and its comparison words encoded alone (a one-word text), at every
//! hidden state the words are written at and as the static control, into `compare_embeddings.parquet`; the cosine
//! of the word alone to each comparison word goes into the metrics (stage `compare`). The sense pictures draw them
//! beside the word's occurrences, so where the word's one static vector lies, and where its occurrences go by
//! context, is measured against named neighbours ("orange" against red, yellow, apple, banana).

use std::collections::BTreeMap;
use std::path::Path;

use super::model::Model;
use super::words::mean_rows;
use crate::data::table::{ColumnData, Table};
use crate::encoder::{TextTokenizer, Tokens, WordsParams};
use crate::error::{Error, Result};
use crate::eval::senses::cosine;
use crate::runtime::metrics::Metrics;

/// The comparison table.
pub const COMPARE_FILE: &str = "compare_embeddings.parquet";

/// A word's vectors when encoded alone: one per written hidden state (in `WordsParams::layers` order), and its
/// static control when it is written.
struct Alone {
    states: Vec<Vec<f32>>,
    fixed: Option<Vec<f32>>,
}

/// Encodes the compared words, writes `compare_embeddings.parquet` into `dir` and pushes the cosines; the file and
/// its rows.
pub fn write(
    model: &mut Model<'_>,
    tokenizer: &TextTokenizer,
    compare: &[(String, Vec<String>)],
    wp: &WordsParams,
    dir: &Path,
    metrics: &mut Metrics,
) -> Result<(String, usize)> {
    let alone = encode_alone(model, tokenizer, compare, wp)?;
    let dim = model.dim();
    let (mut of, mut word, mut layer, mut kind, mut values) = (vec![], vec![], vec![], vec![], vec![]);
    // Every word was encoded (encode_alone takes each one of `compare`): a missing one is a bug.
    let get = |w: &String| alone.get(w).ok_or_else(|| Error::Internal(format!("\"{w}\" was not encoded alone")));
    for (w, others) in compare {
        let own = get(w)?;
        for other in std::iter::once(w).chain(others) {
            let a = get(other)?;
            let spaces =
                wp.layers.iter().map(|&l| Some(l as i64)).zip(&a.states).chain(a.fixed.iter().map(|f| (None, f)));
            for (l, v) in spaces {
                of.push(w.clone());
                word.push(other.clone());
                layer.push(l);
                kind.push(if l.is_some() { "hidden" } else { "static" }.to_owned());
                values.extend_from_slice(v);
            }
            if other == w {
                continue;
            }
            for ((&l, x), y) in wp.layers.iter().zip(&own.states).zip(&a.states) {
                metrics.push_at("compare", &format!("{w}/{other}"), l as i64, cosine(x, y));
            }
            if let (Some(x), Some(y)) = (&own.fixed, &a.fixed) {
                metrics.push("compare", &format!("{w}/{other}/static"), cosine(x, y));
            }
        }
    }
    let rows = of.len();
    let table = Table::new(vec![
        ("of", ColumnData::Str(of)),
        ("word", ColumnData::Str(word)),
        ("layer", ColumnData::OptI64(layer)),
        ("kind", ColumnData::Str(kind)),
        ("vector", ColumnData::Vectors { dim, values }),
    ]);
    crate::data::write_parquet(&table, &dir.join(COMPARE_FILE))?;
    Ok((COMPARE_FILE.to_owned(), rows))
}

/// Every word of `compare` (compared and comparison words, once each) through the encoder alone: the mean of its
/// pieces (the special tokens left out) at each written hidden state, and of its word-piece embedding rows.
fn encode_alone(
    model: &mut Model<'_>,
    tokenizer: &TextTokenizer,
    compare: &[(String, Vec<String>)],
    wp: &WordsParams,
) -> Result<BTreeMap<String, Alone>> {
    let mut texts: Vec<&String> = Vec::new();
    for (w, others) in compare {
        for t in std::iter::once(w).chain(others) {
            if !texts.contains(&t) {
                texts.push(t);
            }
        }
    }
    let mut tokens: Vec<(Tokens, std::ops::Range<usize>)> = Vec::with_capacity(texts.len());
    for t in &texts {
        let (tok, words) = tokenizer.encode_words(t)?;
        let (Some(first), Some(last)) = (words.first(), words.last()) else {
            let key = compare.iter().find(|(w, o)| w == *t || o.contains(t)).map_or(t.as_str(), |c| c.0.as_str());
            return Err(Error::input(
                tokenizer.path(),
                None,
                format!("contextual.compare.{key}: \"{t}\" has no word pieces for this tokenizer"),
            ));
        };
        tokens.push((tok, first.pieces.start..last.pieces.end));
    }
    let lengths: Vec<usize> = tokens.iter().map(|t| t.0.ids.len()).collect();
    let h = model.dim();
    let mut out = BTreeMap::new();
    for batch in super::batches(&lengths, model.batch_tokens()) {
        let docs: Vec<Tokens> = batch.iter().map(|&d| tokens[d].0.clone()).collect();
        let (_, seq, states) = model.encode_tokens(&docs, &wp.layers)?;
        for (slot, &d) in batch.iter().enumerate() {
            let (tok, pieces) = &tokens[d];
            let rows = |table: &[f32], index: &dyn Fn(usize) -> usize| -> Vec<f32> {
                mean_rows(pieces.clone().map(|t| &table[index(t) * h..(index(t) + 1) * h]), h)
            };
            let states = states.iter().map(|s| rows(s, &|t| slot * seq + t)).collect();
            let fixed = model.static_table().map(|table| rows(table, &|t| tok.ids[t] as usize));
            out.insert(texts[d].clone(), Alone { states, fixed });
        }
    }
    Ok(out)
}
