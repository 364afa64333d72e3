//! `eval.senses` for the contextual stage: each row of the sense file (a text, an ambiguous word in it, the word's
//! sense there) is found among the stage's documents (the first document with exactly that text; the word's first
//! occurrence in it), its word vectors are kept at every written hidden state, as the static control and as the
//! document's own pooled vector, and once every document is encoded they are scored with [`crate::eval::senses`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use crate::data::input::SideFile;
use crate::data::SenseRow;
use crate::encoder::Word;
use crate::error::{Error, Result};
use crate::eval::senses::{evaluate, random_pair_baseline, SenseScores};
use crate::runtime::metrics::Metrics;

/// Where a kept vector comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// Hidden state l (0: the embeddings' output).
    Layer(usize),
    /// The word-piece embedding rows alone.
    Static,
    /// The document's pooled vector.
    Document,
}

impl Space {
    fn name(self) -> String {
        match self {
            Space::Layer(l) => format!("layer {l}"),
            Space::Static => "static".into(),
            Space::Document => "document".into(),
        }
    }
}

/// The sense file's rows and the vectors found for them so far.
pub struct SenseCollector {
    path: PathBuf,
    rows: Vec<SenseRow>,
    by_text: HashMap<String, Vec<usize>>,
    matched: Vec<bool>,
    kept: BTreeMap<Space, Vec<(usize, Vec<f32>)>>,
}

/// Random pairs per space for the anisotropy baseline.
const BASELINE_PAIRS: usize = 5_000;

impl SenseCollector {
    pub fn open(file: &SideFile) -> Result<SenseCollector> {
        let path = file.path.as_path();
        let rows = crate::data::read_senses(path, file.format)?;
        if rows.is_empty() {
            return Err(Error::input(path, None, "the sense file has no rows"));
        }
        let mut by_text: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_text.entry(r.text.clone()).or_default().push(i);
        }
        let matched = vec![false; rows.len()];
        Ok(SenseCollector { path: path.to_owned(), rows, by_text, matched, kept: BTreeMap::new() })
    }

    /// The words the file evaluates, sorted.
    pub fn words(&self) -> Vec<String> {
        self.rows.iter().map(|r| r.word.clone()).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// The not yet matched rows of a document with this text whose word it contains: (row, the word's first
    /// position). They count as matched from now on.
    pub fn take(&mut self, text: &str, words: &[Word]) -> Vec<(usize, usize)> {
        let Some(rows) = self.by_text.get(text) else { return Vec::new() };
        let mut out = Vec::new();
        for &r in rows {
            if self.matched[r] {
                continue;
            }
            if let Some(p) = words.iter().position(|w| w.text == self.rows[r].word) {
                self.matched[r] = true;
                out.push((r, p));
            }
        }
        out
    }

    /// The word of row `r`.
    pub fn word(&self, r: usize) -> &str {
        &self.rows[r].word
    }

    pub fn keep(&mut self, r: usize, space: Space, vector: Vec<f32>) {
        self.kept.entry(space).or_default().push((r, vector));
    }

    /// Scores every word in every space into `metrics` (stage `senses`) and returns one summary part per word
    /// ("orange: best layer 4, AUC 0.96 vs static 0.50"). A row whose text is not among the documents, or whose
    /// word is not in its text, is an input error naming its data row.
    pub fn finish(mut self, metrics: &mut Metrics, seed: u64) -> Result<Vec<String>> {
        // Occurrences in the file's order (they were found in batch order): 1-NN ties go to the earlier row.
        for kept in self.kept.values_mut() {
            kept.sort_by_key(|(r, _)| *r);
        }
        if let Some(r) = self.matched.iter().position(|m| !m) {
            let row = &self.rows[r];
            return Err(Error::input(
                &self.path,
                None,
                format!(
                    "data row {}: no document has the text {:?} with the word '{}' in it (the texts must be documents of the job's input)",
                    r + 1,
                    row.text,
                    row.word
                ),
            ));
        }
        let words = self.words();
        // Per word: the best layer by AUC and its AUC, and the static control's AUC.
        type Best = (Option<(usize, f64)>, Option<f64>);
        let mut best: BTreeMap<String, Best> = BTreeMap::new();
        for (space, kept) in &self.kept {
            let all: Vec<&[f32]> = kept.iter().map(|(_, v)| v.as_slice()).collect();
            let baseline = random_pair_baseline(&all, BASELINE_PAIRS, seed);
            let mut per_word: Vec<SenseScores> = Vec::new();
            for w in &words {
                let (vs, ss): (Vec<&[f32]>, Vec<&str>) = kept
                    .iter()
                    .filter(|(r, _)| self.rows[*r].word == *w)
                    .map(|(r, v)| (v.as_slice(), self.rows[*r].sense.as_str()))
                    .unzip();
                let s = evaluate(&vs, &ss, baseline);
                push(metrics, w, *space, &s);
                let entry = best.entry(w.clone()).or_default();
                match space {
                    Space::Layer(l) => {
                        if let Some(a) = s.auc {
                            if entry.0.is_none_or(|(_, b)| a > b) {
                                entry.0 = Some((*l, a));
                            }
                        }
                    }
                    Space::Static => entry.1 = s.auc,
                    Space::Document => {}
                }
                per_word.push(s);
            }
            // Overall: the mean of each score over the words that have it.
            let mean = |f: &dyn Fn(&SenseScores) -> Option<f64>| {
                let v: Vec<f64> = per_word.iter().filter_map(f).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            let overall = SenseScores {
                occurrences: per_word.iter().map(|s| s.occurrences).sum(),
                senses: per_word.iter().map(|s| s.senses).sum(),
                within: mean(&|s| s.within),
                across: mean(&|s| s.across),
                auc: mean(&|s| s.auc),
                knn_accuracy: mean(&|s| s.knn_accuracy),
                majority_rate: mean(&|s| Some(s.majority_rate)).unwrap_or(0.0),
            };
            push(metrics, "all", *space, &overall);
            metrics.push("senses", &format!("baseline_cosine/{}", space.name()), baseline);
        }
        Ok(best
            .into_iter()
            .map(|(w, (layer, stat))| {
                let layer =
                    layer.map_or("no layer with two senses".into(), |(l, a)| format!("best layer {l}, AUC {a:.2}"));
                let stat = stat.map_or(String::new(), |a| format!(" vs static {a:.2}"));
                format!("{w}: {layer}{stat}")
            })
            .collect())
    }
}

/// Metrics of one word (or "all") in one space: stage `senses`, metric `<word>/<score>`, indexed by the layer for
/// hidden states; `<word>/static/<score>` and `<word>/document/<score>` for the other spaces.
fn push(metrics: &mut Metrics, word: &str, space: Space, s: &SenseScores) {
    let scores = [
        ("within_minus_baseline", s.within),
        ("across_minus_baseline", s.across),
        ("auc", s.auc),
        ("knn_accuracy", s.knn_accuracy),
        ("majority_rate", Some(s.majority_rate)),
        ("occurrences", Some(s.occurrences as f64)),
    ];
    for (name, value) in scores {
        let Some(v) = value else { continue };
        match space {
            Space::Layer(l) => metrics.push_at("senses", &format!("{word}/{name}"), l as i64, v),
            Space::Static => metrics.push("senses", &format!("{word}/static/{name}"), v),
            Space::Document => metrics.push("senses", &format!("{word}/document/{name}"), v),
        }
    }
}
