//! The pipeline file as written: strict TOML (`deny_unknown_fields` everywhere). Nothing here checks meaning beyond
//! types; [`crate::plan`] turns a [`Config`] into a validated plan. Every key is documented in the README.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
// The enums the compute modules own (they take their own parameter types); the config reads them as written.
pub use crate::backend::BackendChoice;
pub use crate::data::input::Format;
pub use crate::encoder::PrecisionChoice;
pub use crate::recommend::network::{EmbeddingInit, Optimizer, Pooling};
pub use crate::recommend::sampling::{Loss, Sampler};
pub use crate::text::vectorizer::{DfBound, Weighting};

/// One pipeline file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub job: JobConfig,
    pub input: InputConfig,
    pub bow: Option<BowConfig>,
    pub pca: Option<PcaConfig>,
    pub model: Option<ModelConfig>,
    pub contextual: Option<ContextualConfig>,
    pub finetune: Option<FinetuneConfig>,
    pub train: Option<TrainConfig>,
    pub eval: Option<EvalConfig>,
    #[serde(default)]
    pub output: OutputConfig,
}

/// `[contextual]`: document vectors from a pretrained Transformer encoder (text layout).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextualConfig {
    /// A local Hugging Face model folder (config.json, tokenizer.json, model.safetensors), relative to the pipeline.
    pub model: String,
    /// How token vectors become a document vector; `auto`: the folder's sentence-transformers pooling, else mean.
    #[serde(default)]
    pub pooling: PoolingChoice,
    /// Unit-length vectors; `auto`: when the folder's sentence-transformers modules end in Normalize.
    #[serde(default)]
    pub normalize: AutoBool,
    /// Longest input in tokens (special tokens included); default: max_seq_length, else max_position_embeddings.
    pub max_tokens: Option<u64>,
    /// Cut longer documents (counted in `truncated_documents`); `false`: a longer document is an input error.
    #[serde(default = "default_true")]
    pub truncate: bool,
    /// Padded tokens per batch; documents are batched by length, so padding stays small.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: u64,
    /// What the dense layers multiply in: `auto` (f16 on tensor cores where the adapter has them, else f32), `f32`,
    /// or `f16` (a GPU with f16 shaders; an error elsewhere).
    #[serde(default)]
    pub precision: PrecisionChoice,
    /// Words whose vectors in context go to `token_embeddings.parquet`: a list (matched lowercased), or `"all"`.
    pub words: Option<WordsChoice>,
    /// With `words = "all"`: at most this many word occurrences are written.
    #[serde(default = "default_words_limit")]
    pub words_limit: u64,
    /// Hidden states written for each word (0: the embeddings' output); default: every one.
    pub layers: Option<Vec<u64>>,
    /// Also each word's word-piece embedding rows alone (no position or token type): the static control.
    #[serde(default = "default_true", rename = "static")]
    pub static_control: bool,
    /// Words to draw and measure beside a written word: `{ orange = ["red", "yellow", "apple", "banana"] }`. Each
    /// is encoded alone (a one-word text) at the written hidden states and as its static control, into
    /// `compare_embeddings.parquet`; the sense pictures show them next to the word's occurrences.
    pub compare: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// Keep each document's vector in the encoder cache (`output.cache_dir`) and read it back in later runs instead
    /// of encoding the same text again. Default true.
    #[serde(default = "default_true")]
    pub cache: bool,
}

/// `[finetune]`: trains a pretrained encoder on the job's documents before the contextual stage encodes them
/// (`contextual.model = "finetuned"`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// The starting point: a Hugging Face / sentence-transformers model folder, relative to the pipeline.
    pub model: String,
    /// `contrastive` (sentence-transformers' MultipleNegativesRankingLoss) or `mlm` (BERT's masked language model on
    /// the input's documents).
    #[serde(default = "default_objective")]
    pub objective: crate::finetune::Objective,
    /// CSV or Parquet of training pairs: columns `anchor`, `positive` (and optionally `negative`) holding texts, or
    /// `anchor_id`, `positive_id` (`negative_id`) holding row ids of the input. Without it, pairs come from
    /// `eval.labels`: documents that share a category.
    pub pairs: Option<PathBuf>,
    /// Share of the labelled documents kept out of the pairs drawn from `eval.labels` (the evaluation reports
    /// them apart), or with `mlm` of the documents kept out of training (their masked-token accuracy is reported).
    /// Default 0.2; drawn with `eval.split_seed`.
    pub holdout: Option<f64>,
    #[serde(default = "default_finetune_epochs")]
    pub epochs: u64,
    /// Pairs per step (anchors; their positives and negatives come on top).
    #[serde(default = "default_finetune_batch")]
    pub batch_size: u64,
    #[serde(default = "default_finetune_lr")]
    pub learning_rate: f64,
    #[serde(default = "default_warmup")]
    pub warmup_ratio: f64,
    #[serde(default = "default_finetune_decay")]
    pub weight_decay: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: f64,
    /// The cosines' factor of the contrastive loss (1 / temperature).
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// `mlm`: the share of word pieces chosen for prediction (default 0.15).
    pub mlm_probability: Option<f64>,
    /// Dropout while training, of the hidden states and the attention probabilities; default: the model's
    /// config.json (`hidden_dropout_prob`, `attention_probs_dropout_prob`); 0 turns it off.
    pub dropout: Option<f64>,
    /// Longest training text in tokens; default: the folder's max_seq_length, else the model's limit.
    pub max_tokens: Option<u64>,
    /// Pair sampling and batch order; default the job seed.
    pub seed: Option<u64>,
}

fn default_objective() -> crate::finetune::Objective {
    crate::finetune::Objective::Contrastive
}
fn default_finetune_epochs() -> u64 {
    1
}
fn default_finetune_batch() -> u64 {
    32
}
fn default_finetune_lr() -> f64 {
    2e-5
}
fn default_warmup() -> f64 {
    0.1
}
fn default_finetune_decay() -> f64 {
    0.01
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_scale() -> f64 {
    20.0
}

/// `contextual.words`: a list of words, or a string (which must be `"all"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum WordsChoice {
    List(Vec<String>),
    Named(String),
}

fn default_words_limit() -> u64 {
    100_000
}

fn default_batch_tokens() -> u64 {
    16_384
}

/// `contextual.pooling`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingChoice {
    #[default]
    Auto,
    Mean,
    Cls,
    Max,
}

/// `true`, `false` or `"auto"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum AutoBool {
    #[default]
    Auto,
    Set(bool),
}

impl<'de> Deserialize<'de> for AutoBool {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AutoBool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("true, false or \"auto\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<AutoBool, E> {
                Ok(AutoBool::Set(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<AutoBool, E> {
                match v {
                    "auto" => Ok(AutoBool::Auto),
                    other => Err(E::custom(format!("expected true, false or \"auto\", found \"{other}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[job]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Names the job in outputs and logs; also the default output folder `out/<name>`.
    pub name: String,
    /// Seed for everything random in the job.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub backend: BackendChoice,
    /// Refuse stages whose planned memory is over this: bytes, or e.g. "4GiB", "500MB".
    pub max_memory: Option<toml::Value>,
}

/// `[input]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// Relative to the pipeline file's folder.
    pub path: PathBuf,
    /// Default: from the file's extension.
    pub format: Option<Format>,
    pub layout: Layout,
    /// User column (long, list layouts). Default `user`.
    pub user: Option<String>,
    /// Item column (long: one item per row; list: a list column). Default `item` (long) or `items` (list).
    pub item: Option<String>,
    /// Optional order column (long layout): a user's items are sorted by it.
    pub order: Option<String>,
    /// Optional weight column (long layout, positive numbers): the model's pooling weights each input item by it.
    pub weight: Option<String>,
    /// Text column (text layout). Default `text`.
    pub text: Option<String>,
    /// Row id column (text, numeric layouts). Default: the row number.
    pub id: Option<String>,
    /// Feature columns (numeric layout). Default: every numeric column but `id` and `exclude`.
    pub columns: Option<Vec<String>>,
    /// Numeric layout without `columns`: numeric columns to leave out (e.g. a label).
    pub exclude: Option<Vec<String>>,
    /// CSV field separator, one ASCII character. Default `,`.
    pub separator: Option<String>,
}

/// How rows of the input map to documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One `user,item` row per interaction.
    Long,
    /// One row per user with a list column of items.
    List,
    /// One document of free text per row.
    Text,
    /// Numeric feature columns (PCA of tables).
    Numeric,
}

/// `[bow]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BowConfig {
    #[serde(default = "default_true")]
    pub lowercase: bool,
    #[serde(default = "default_token_pattern")]
    pub token_pattern: String,
    #[serde(default)]
    pub stop_words: Vec<String>,
    #[serde(default = "default_min_df")]
    pub min_df: DfBound,
    #[serde(default = "default_max_df")]
    pub max_df: DfBound,
    pub max_features: Option<u64>,
    #[serde(default)]
    pub weighting: Weighting,
}

impl Default for BowConfig {
    fn default() -> Self {
        BowConfig {
            lowercase: true,
            token_pattern: default_token_pattern(),
            stop_words: Vec::new(),
            min_df: default_min_df(),
            max_df: default_max_df(),
            max_features: None,
            weighting: Weighting::default(),
        }
    }
}

/// scikit-learn's default token pattern: runs of two or more word characters.
pub const DEFAULT_TOKEN_PATTERN: &str = r"(?u)\b\w\w+\b";

fn default_true() -> bool {
    true
}
fn default_token_pattern() -> String {
    DEFAULT_TOKEN_PATTERN.to_owned()
}
fn default_min_df() -> DfBound {
    DfBound::Count(1)
}
fn default_max_df() -> DfBound {
    DfBound::Fraction(1.0)
}

/// `[pca]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PcaConfig {
    /// An integer (components to keep) or a float in (0, 1) (variance to explain).
    pub n_components: ComponentsSpec,
    #[serde(default)]
    pub whiten: bool,
    /// Scale each column to unit variance first (population std, as StandardScaler); zero-variance columns stay.
    #[serde(default)]
    pub standardize: bool,
    #[serde(default)]
    pub solver: PcaSolver,
    /// Randomized solver: extra random directions beyond n_components. Default 10.
    pub oversamples: Option<u64>,
    /// Randomized solver: power iterations. Default 7.
    pub power_iterations: Option<u64>,
}

/// How many principal components to keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ComponentsSpec {
    Count(u64),
    VarianceFraction(f64),
}

impl<'de> Deserialize<'de> for ComponentsSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ComponentsSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of components (integer >= 1) or a variance fraction (float in (0, 1))")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<ComponentsSpec, E> {
                if v >= 1 {
                    Ok(ComponentsSpec::Count(v as u64))
                } else {
                    Err(E::custom(format!("the number of components must be at least 1 (got {v})")))
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<ComponentsSpec, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<ComponentsSpec, E> {
                if v > 0.0 && v < 1.0 {
                    Ok(ComponentsSpec::VarianceFraction(v))
                } else {
                    Err(E::custom(format!("a variance fraction must lie strictly between 0 and 1 (got {v})")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// PCA solver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PcaSolver {
    /// Picked by shape; run.json says which.
    #[default]
    Auto,
    /// Eigendecomposition of the p×p covariance.
    Covariance,
    /// Eigendecomposition of the n×n Gram matrix of the centred rows (fewer rows than features).
    Gram,
    /// Randomized range finder (Halko et al.) with implicit centring.
    Randomized,
    /// Thick-restart block Lanczos on the smaller side, converged to a residual of 1e-8 (exact eigenvalues).
    Lanczos,
}

/// `[model]`: multi-hot input → embedding (V×d) → hidden (n, ReLU) → logits over all V items → softmax.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// d, or "auto" = round(items^0.25).
    #[serde(default)]
    pub embedding_dim: EmbeddingDim,
    /// n; 0 = no hidden layer (the pooled embedding feeds the output layer).
    #[serde(default = "default_hidden")]
    pub hidden_units: u64,
    #[serde(default)]
    pub activation: Activation,
    #[serde(default)]
    pub pooling: Pooling,
    /// k: favourites given as input per example (one more is the label).
    #[serde(default = "default_inputs_per_example")]
    pub inputs_per_example: u64,
    /// "softmax" over every item, or "sampled_softmax" over sampled negatives (large catalogues).
    #[serde(default)]
    pub loss: Loss,
    /// Negatives drawn per batch with the sampled softmax (default 1000).
    pub negatives: Option<u64>,
    /// What the negatives are drawn from: "frequency" (default) or "uniform".
    pub sampler: Option<Sampler>,
}

fn default_hidden() -> u64 {
    64
}
fn default_inputs_per_example() -> u64 {
    4
}

/// The embedding width.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingDim {
    Fixed(u64),
    /// round(items^0.25), the rule of thumb of TensorFlow's feature-column guide.
    #[default]
    Auto,
}

impl<'de> Deserialize<'de> for EmbeddingDim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = EmbeddingDim;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer >= 1 or \"auto\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<EmbeddingDim, E> {
                if v >= 1 {
                    Ok(EmbeddingDim::Fixed(v as u64))
                } else {
                    Err(E::custom(format!("the embedding dimension must be at least 1 (got {v})")))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<EmbeddingDim, E> {
                if v == "auto" {
                    Ok(EmbeddingDim::Auto)
                } else {
                    Err(E::custom(format!("expected an integer or \"auto\", got \"{v}\"")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Hidden-layer activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
}

/// `[train]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "default_epochs")]
    pub epochs: u64,
    #[serde(default = "default_batch")]
    pub batch_size: u64,
    #[serde(default)]
    pub optimizer: Optimizer,
    #[serde(default = "default_lr")]
    pub learning_rate: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: Option<f64>,
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default)]
    pub init: EmbeddingInit,
    /// Weights and shuffling; default the job seed.
    pub seed: Option<u64>,
    /// Stop after this many epochs without a lower held-out loss (and keep the best epoch's weights).
    pub patience: Option<u64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: default_epochs(),
            batch_size: default_batch(),
            optimizer: Optimizer::default(),
            learning_rate: default_lr(),
            momentum: None,
            weight_decay: 0.0,
            init: EmbeddingInit::default(),
            seed: None,
            patience: None,
        }
    }
}

fn default_epochs() -> u64 {
    3
}
fn default_batch() -> u64 {
    256
}
fn default_lr() -> f64 {
    0.01
}

/// `[eval]`
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Cut-offs for recall@k and NDCG@k.
    #[serde(default = "default_ks")]
    pub k: Vec<u64>,
    /// Nearest neighbours written per item.
    #[serde(default = "default_neighbors")]
    pub neighbors: u64,
    /// Share of users held out for testing.
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the split (apart from the training seed).
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// CSV or Parquet with an item column and a category column.
    pub labels: Option<PathBuf>,
    /// Item column of `labels`. Default "item".
    pub labels_item: Option<String>,
    /// For text inputs: the column of `labels` holding each document's row id (the input's `id` values, or the
    /// row number without an id column). Default: the input's id column name, else "id".
    pub labels_row: Option<String>,
    /// Category column of `labels`. Default "category".
    pub labels_category: Option<String>,
    /// CSV or Parquet of item pairs with a human similarity score (columns item_a, item_b, score).
    pub pairs: Option<PathBuf>,
    /// CSV or Parquet of sentences with an ambiguous word and its sense (columns text, word, sense), for the
    /// contextual stage's sense evaluation.
    pub senses: Option<PathBuf>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            k: default_ks(),
            neighbors: default_neighbors(),
            test_fraction: default_test_fraction(),
            split_seed: default_split_seed(),
            labels: None,
            labels_item: None,
            labels_row: None,
            labels_category: None,
            pairs: None,
            senses: None,
        }
    }
}

fn default_ks() -> Vec<u64> {
    vec![10]
}
fn default_neighbors() -> u64 {
    10
}
fn default_test_fraction() -> f64 {
    0.1
}
fn default_split_seed() -> u64 {
    42
}

/// `[output]`
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Relative to the pipeline file's folder. Default `out/<job.name>`.
    pub dir: Option<PathBuf>,
    /// How many complete runs to keep under `runs/`. Default 5.
    pub keep_runs: Option<u64>,
    /// Every embedding table also as word2vec text (`<name>.vec`) and TensorBoard projector files. Default true.
    pub handoff: Option<bool>,
    /// PNG plots in `plots/` and `report.html`. Default true.
    pub plots: Option<bool>,
    /// The encoder cache's folder, relative to the pipeline file's folder. Default `<output.dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Cache segments no run has read from for this many days are removed. Default 30.
    pub cache_keep_days: Option<u64>,
}

impl Config {
    /// Parses a pipeline file's text; `file` only names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Config> {
        let de = toml::de::Deserializer::parse(text).map_err(|e| syntax_error(text, file, String::new(), &e))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            syntax_error(text, file, key, e.inner())
        })
    }

    /// Reads and parses a pipeline file.
    pub fn from_file(file: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(file).map_err(|source| Error::ConfigRead { file: file.to_owned(), source })?;
        Config::from_toml(&text, file)
    }
}

fn syntax_error(text: &str, file: &Path, key: String, e: &toml::de::Error) -> Error {
    let (line, column) = match e.span() {
        Some(span) => line_column(text, span.start),
        None => (1, 1),
    };
    Error::ConfigSyntax { file: file.to_owned(), line, column, key, message: e.message().trim().to_owned() }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
