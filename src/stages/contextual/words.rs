//! Word vectors in context (`contextual.words`, and the sense file's words): which occurrences a batch holds, the
//! mean of each word's pieces at every asked hidden state and as the static control, and their rows of
//! `token_embeddings.parquet`.

use super::senses::{SenseCollector, Space};
use super::windows::Window;
use crate::data::table::{ColumnData, Table};
use crate::encoder::{Word, WordsParams};

/// The words written: `contextual.words`, with the sense file's words always among them (added to the list, or
/// every hidden state and the static control for them alone when `words` is not set).
pub fn wanted(words: Option<&WordsParams>, senses: Option<&SenseCollector>, layer_count: usize) -> Option<WordsParams> {
    match (words, senses) {
        (w, None) => w.cloned(),
        (Some(w), Some(c)) => {
            let mut w = w.clone();
            if let Some(only) = &mut w.only {
                for word in c.words() {
                    if !only.contains(&word) {
                        only.push(word);
                    }
                }
            }
            Some(w)
        }
        (None, Some(c)) => Some(WordsParams {
            only: Some(c.words()),
            limit: usize::MAX,
            layers: (0..=layer_count).collect(),
            static_control: true,
        }),
    }
}

/// The token-level output: every kept word occurrence at every asked hidden state, and its static control.
pub const TOKENS_FILE: &str = "token_embeddings.parquet";

/// Rows of `token_embeddings.parquet` for one window.
pub struct TokenRows {
    dim: usize,
    row_id: Vec<i64>,
    row: Vec<String>,
    word: Vec<String>,
    position: Vec<i32>,
    layer: Vec<Option<i64>>,
    kind: Vec<String>,
    vectors: Vec<f32>,
}

/// One word row: the document (index in the corpus), the word, its position, the hidden state (None: the static
/// control) and the vector.
struct FoundRow {
    doc: usize,
    word: String,
    position: usize,
    layer: Option<usize>,
    vector: Vec<f32>,
}

/// One batch's word rows, by document, then position.
pub struct FoundRows(Vec<FoundRow>);

impl TokenRows {
    pub fn new(dim: usize) -> TokenRows {
        TokenRows {
            dim,
            row_id: Vec::new(),
            row: Vec::new(),
            word: Vec::new(),
            position: Vec::new(),
            layer: Vec::new(),
            kind: Vec::new(),
            vectors: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.row_id.is_empty()
    }

    pub fn append(&mut self, found: FoundRows, ids: &[String]) {
        for FoundRow { doc, word, position, layer, vector: v } in found.0 {
            self.row_id.push(doc as i64);
            self.row.push(ids[doc].clone());
            self.word.push(word);
            self.position.push(position as i32);
            self.layer.push(layer.map(|l| l as i64));
            self.kind.push(if layer.is_some() { "hidden" } else { "static" }.to_owned());
            self.vectors.extend(v);
        }
    }

    pub fn into_table(self) -> Table {
        Table::new(vec![
            ("row_id", ColumnData::I64(self.row_id)),
            ("row", ColumnData::Str(self.row)),
            ("word", ColumnData::Str(self.word)),
            ("position", ColumnData::I32(self.position)),
            ("layer", ColumnData::OptI64(self.layer)),
            ("kind", ColumnData::Str(self.kind)),
            ("vector", ColumnData::Vectors { dim: self.dim, values: self.vectors }),
        ])
    }
}

/// The wanted word occurrences of one batch (documents `batch`, indices into the window), sorted by document, then
/// position: (slot in the batch, position in its document, word). With `words = "all"` they count towards the limit.
pub fn select_words<'w>(
    wp: &WordsParams,
    batch: &[usize],
    window: &'w Window,
    occurrences: &mut usize,
) -> Vec<(usize, usize, &'w Word)> {
    let mut wanted = Vec::new();
    let mut order: Vec<(usize, usize)> = batch.iter().enumerate().map(|(slot, &d)| (d, slot)).collect();
    order.sort_unstable();
    for &(d, slot) in &order {
        for (position, w) in window.words[d].iter().enumerate() {
            let keep = match &wp.only {
                Some(list) => list.contains(&w.text),
                None => *occurrences < wp.limit,
            };
            if keep && !w.pieces.is_empty() {
                *occurrences += 1;
                wanted.push((slot, position, w));
            }
        }
    }
    wanted
}

/// The rows of the `wanted` words from the batch's hidden states (`states[i]` is hidden state `wp.layers[i]`, batch
/// · `seq` × `h`): the mean of each word's pieces at every asked hidden state (summed in f64), then its static
/// control (the mean of its pieces' word-embedding rows alone).
#[allow(clippy::too_many_arguments)]
pub fn word_vectors(
    wanted: &[(usize, usize, &Word)],
    wp: &WordsParams,
    batch: &[usize],
    window: &Window,
    (seq, h): (usize, usize),
    states: &[Vec<f32>],
    static_table: Option<&[f32]>,
) -> FoundRows {
    let mut out = Vec::with_capacity(wanted.len() * (wp.layers.len() + 1));
    for &(slot, position, w) in wanted {
        let doc = window.start + batch[slot];
        for (state, &layer) in states.iter().zip(&wp.layers) {
            let v = mean_rows(w.pieces.clone().map(|t| &state[(slot * seq + t) * h..(slot * seq + t + 1) * h]), h);
            out.push(FoundRow { doc, word: w.text.clone(), position, layer: Some(layer), vector: v });
        }
        if let Some(table) = static_table {
            let ids = &window.tokens[batch[slot]].ids;
            let v = mean_rows(w.pieces.clone().map(|t| &table[ids[t] as usize * h..(ids[t] as usize + 1) * h]), h);
            out.push(FoundRow { doc, word: w.text.clone(), position, layer: None, vector: v });
        }
    }
    FoundRows(out)
}

/// The mean of `h`-wide rows, summed in f64.
pub fn mean_rows<'a>(rows: impl Iterator<Item = &'a [f32]>, h: usize) -> Vec<f32> {
    let mut acc = vec![0f64; h];
    let mut n = 0usize;
    for r in rows {
        for (a, &v) in acc.iter_mut().zip(r) {
            *a += f64::from(v);
        }
        n += 1;
    }
    acc.iter().map(|&a| (a / n.max(1) as f64) as f32).collect()
}

/// Keeps the vectors of the sense file's rows found in this batch: each row's word at its first position in its
/// document, at every hidden state and as the static control, and the document's pooled vector (`pooled`: the
/// batch's vectors, in batch order).
pub fn keep_sense_vectors(
    c: &mut SenseCollector,
    found: &FoundRows,
    batch: &[usize],
    window: &Window,
    texts: &[String],
    pooled: &[f32],
    h: usize,
) {
    for (slot, &d) in batch.iter().enumerate() {
        let doc = window.start + d;
        for (row, position) in c.take(&texts[doc], &window.words[d]) {
            let word = c.word(row).to_owned();
            let hits: Vec<(Space, Vec<f32>)> = found
                .0
                .iter()
                .filter(|f| f.doc == doc && f.position == position && f.word == word)
                .map(|f| (f.layer.map_or(Space::Static, Space::Layer), f.vector.clone()))
                .collect();
            for (space, v) in hits {
                c.keep(row, space, v);
            }
            c.keep(row, Space::Document, pooled[slot * h..(slot + 1) * h].to_vec());
        }
    }
}
