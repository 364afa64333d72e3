//! `[contextual]` checked in two steps: the keys that need no model folder (with every other problem of the
//! config), then the keys resolved against the folder read before planning (its defaults for `auto`, `max_tokens`
//! within the model's, `layers` within its depth).

use std::path::Path;

use super::config::{AutoBool, Config, ContextualConfig, Layout, PoolingChoice, WordsChoice};
use super::problems::Problems;
use crate::backend::{PoolMode, MAX_SEQ};
use crate::data::input::SideFile;
use crate::encoder::{EncodeParams, ModelFolder, WordsParams};
use crate::error::{Error, Result};

/// The contextual stage, resolved against its model folder.
#[derive(Debug, Clone)]
pub struct ContextualPlan {
    pub folder: ModelFolder,
    pub encode: EncodeParams,
    /// Word vectors to write (`token_embeddings.parquet`), if any.
    pub words: Option<WordsParams>,
    /// `eval.senses`: sentences with an ambiguous word and its sense, evaluated on the word vectors.
    pub senses: Option<SideFile>,
    /// The encoder cache, or why this run does not use it.
    pub cache: std::result::Result<CachePlan, String>,
    /// `contextual.compare`, lowercased: each word with the words drawn beside it.
    pub compare: Vec<(String, Vec<String>)>,
}

/// The encoder cache of a run: its folder and how long unused segments stay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlan {
    pub dir: std::path::PathBuf,
    pub keep_days: u64,
}

/// The keys of `[contextual]` that need no model folder to check; `false` when one has a problem.
pub(super) fn check_contextual(config: &Config, problems: &mut Problems) -> bool {
    let Some(c) = config.contextual.as_ref() else { return false };
    let before = problems.count();
    if config.input.layout != Layout::Text {
        problems.add("contextual", "contextual embeddings need documents: input.layout = \"text\"");
    }
    if c.model.trim().is_empty() {
        problems.add("contextual.model", "must name a model folder");
    }
    if c.max_tokens == Some(0) || c.max_tokens.is_some_and(|m| m > MAX_SEQ as u64) {
        problems.add("contextual.max_tokens", format!("must be between 1 and {MAX_SEQ}"));
    }
    if c.batch_tokens == 0 || c.batch_tokens > 1 << 24 {
        problems.add("contextual.batch_tokens", "must be between 1 and 16777216");
    }
    match &c.words {
        Some(WordsChoice::Named(w)) if w != "all" => {
            problems.add("contextual.words", format!("expected a list of words or \"all\", found \"{w}\""))
        }
        Some(WordsChoice::List(v)) if v.is_empty() || v.iter().any(|w| w.trim().is_empty()) => {
            problems.add("contextual.words", "must list at least one word, none empty")
        }
        _ => {}
    }
    if c.words_limit == 0 {
        problems.add("contextual.words_limit", "must be at least 1");
    }
    if c.words.is_none() && (c.layers.is_some() || !c.static_control) {
        problems.add("contextual.layers", "layers and static choose what contextual.words writes: set words too");
    }
    check_compare(c, problems);
    problems.count() == before
}

/// `contextual.compare`: words of `contextual.words` (when it is a list), each with at least one comparison word,
/// none empty.
fn check_compare(c: &ContextualConfig, problems: &mut Problems) {
    let Some(compare) = &c.compare else { return };
    let listed: Option<Vec<String>> = match &c.words {
        Some(WordsChoice::List(v)) => Some(v.iter().map(|w| w.trim().to_lowercase()).collect()),
        Some(WordsChoice::Named(_)) => None,
        None => {
            problems.add("contextual.compare", "comparison words are drawn beside contextual.words: set words too");
            return;
        }
    };
    if compare.is_empty() {
        problems.add("contextual.compare", "must name at least one word");
    }
    for (word, others) in compare {
        let key = format!("contextual.compare.{word}");
        if let Some(list) = listed.as_ref().filter(|l| !l.contains(&word.trim().to_lowercase())) {
            problems.add(&key, format!("\"{word}\" is not among contextual.words ({})", list.join(", ")));
        }
        if others.is_empty() || others.iter().any(|w| w.trim().is_empty()) {
            problems.add(&key, "must list at least one comparison word, none empty");
        }
    }
}

/// `[contextual]` against its model folder (read from `folder.dir`): an error naming the folder's config.json
/// when a key asks for more than the model has.
pub fn contextual_plan(c: &ContextualConfig, folder: ModelFolder) -> Result<ContextualPlan> {
    let config_json = folder.dir.join("config.json");
    let model_max = folder.config.max_tokens().min(MAX_SEQ);
    let max_tokens = match c.max_tokens {
        Some(m) => {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            if m > model_max {
                return Err(Error::input(
                    &config_json,
                    None,
                    format!("contextual.max_tokens = {m} is more than the model takes ({model_max})"),
                ));
            }
            m
        }
        None => folder.max_seq_length.unwrap_or(model_max).min(model_max),
    };
    let pooling = match c.pooling {
        PoolingChoice::Auto => folder.pooling.unwrap_or(PoolMode::Mean),
        PoolingChoice::Mean => PoolMode::Mean,
        PoolingChoice::Cls => PoolMode::Cls,
        PoolingChoice::Max => PoolMode::Max,
    };
    let normalize = match c.normalize {
        AutoBool::Auto => folder.normalize,
        AutoBool::Set(b) => b,
    };
    let batch_tokens = usize::try_from(c.batch_tokens).unwrap_or(usize::MAX).max(max_tokens);
    let words = match &c.words {
        None => None,
        Some(choice) => Some(words_params(c, choice, folder.config.layers, &config_json)?),
    };
    let encode =
        EncodeParams { pooling, normalize, max_tokens, truncate: c.truncate, batch_tokens, precision: c.precision };
    let cache = Err("not planned yet".to_owned());
    let lower = |w: &String| w.trim().to_lowercase();
    let compare =
        c.compare.iter().flatten().map(|(w, others)| (lower(w), others.iter().map(lower).collect())).collect();
    Ok(ContextualPlan { folder, encode, words, senses: None, cache, compare })
}

/// `contextual.words`, `layers`, `words_limit` and `static` for a model of `layer_count` layers.
fn words_params(
    c: &ContextualConfig,
    choice: &WordsChoice,
    layer_count: usize,
    config_json: &Path,
) -> Result<WordsParams> {
    let mut layers: Vec<usize> = match &c.layers {
        None => (0..=layer_count).collect(),
        Some(v) => v.iter().map(|&l| usize::try_from(l).unwrap_or(usize::MAX)).collect(),
    };
    if let Some(&bad) = layers.iter().find(|&&l| l > layer_count) {
        return Err(Error::input(
            config_json,
            None,
            format!(
                "contextual.layers: {bad} is not a hidden state of this {layer_count}-layer model (0 to {layer_count})"
            ),
        ));
    }
    layers.sort_unstable();
    layers.dedup();
    let only = match choice {
        WordsChoice::List(v) => Some(v.iter().map(|w| w.trim().to_lowercase()).collect()),
        WordsChoice::Named(_) => None,
    };
    Ok(WordsParams {
        only,
        limit: usize::try_from(c.words_limit).unwrap_or(usize::MAX),
        layers,
        static_control: c.static_control,
    })
}
