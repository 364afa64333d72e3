//! Turns stage results into the output tables (schemas documented in the README).

use crate::data::table::{ColumnData, Table};
use crate::pca::PcaResult;
use crate::recommend::network::Shape;
use crate::recommend::train::ModelOutput;
use crate::runtime::metrics::Metrics;
use crate::text::vectorizer::Bow;

/// `vocabulary.parquet`: token_id, token, df, count.
pub fn vocabulary(bow: &Bow) -> Table {
    Table::new(vec![
        ("token_id", ColumnData::I32((0..bow.tokens.len() as i32).collect())),
        ("token", ColumnData::Str(bow.tokens.clone())),
        ("df", ColumnData::I64(bow.df.iter().map(|&d| d as i64).collect())),
        ("count", ColumnData::I64(bow.count.iter().map(|&d| d as i64).collect())),
    ])
}

/// `bow.parquet`: row_id, row (the input's id of that row), token_id, value; one row per stored entry.
pub fn bow_entries(bow: &Bow, row_ids: &[String]) -> Table {
    let m = &bow.matrix;
    let mut row_id = Vec::with_capacity(m.nnz());
    let mut row = Vec::with_capacity(m.nnz());
    for (r, (span, id)) in m.indptr.windows(2).zip(row_ids).enumerate() {
        let n = span[1] - span[0];
        row_id.extend(std::iter::repeat_n(r as i64, n));
        row.extend(std::iter::repeat_n(id.clone(), n));
    }
    Table::new(vec![
        ("row_id", ColumnData::I64(row_id)),
        ("row", ColumnData::Str(row)),
        ("token_id", ColumnData::I32(m.indices.iter().map(|&c| c as i32).collect())),
        ("value", ColumnData::F64(m.values.clone())),
    ])
}

/// Whether PCA features are BoW tokens or numeric columns (names the output columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    Token,
    Feature,
}

impl FeatureKind {
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            FeatureKind::Token => ("token_id", "token"),
            FeatureKind::Feature => ("feature_id", "feature"),
        }
    }
}

/// `pca_components.parquet`: component, token_id / feature_id, token / feature, loading; one row per loading.
pub fn pca_components(r: &PcaResult, names: &[String], kind: FeatureKind) -> Table {
    let (k, p) = (r.components.rows(), r.components.cols());
    let (id_col, name_col) = kind.columns();
    Table::new(vec![
        ("component", ColumnData::I32((0..k).flat_map(|c| std::iter::repeat_n(c as i32, p)).collect())),
        (id_col, ColumnData::I32((0..k).flat_map(|_| 0..p as i32).collect())),
        (name_col, ColumnData::Str((0..k).flat_map(|_| names.iter().cloned()).collect())),
        ("loading", ColumnData::F64(r.components.data().to_vec())),
    ])
}

/// `pca_features.parquet`: token_id / feature_id, token / feature, mean, scale (the centring and the
/// standardization applied before projecting).
pub fn pca_features(r: &PcaResult, names: &[String], kind: FeatureKind) -> Table {
    let (id_col, name_col) = kind.columns();
    Table::new(vec![
        (id_col, ColumnData::I32((0..names.len() as i32).collect())),
        (name_col, ColumnData::Str(names.to_vec())),
        ("mean", ColumnData::F64(r.mean.clone())),
        ("scale", ColumnData::F64(r.scale.clone())),
    ])
}

/// `pca_projections.parquet`: row_id, row, vector (fixed-size list of float32, one value per component).
pub fn pca_projections(r: &PcaResult, row_ids: &[String]) -> Table {
    Table::new(vec![
        ("row_id", ColumnData::I64((0..row_ids.len() as i64).collect())),
        ("row", ColumnData::Str(row_ids.to_vec())),
        (
            "vector",
            ColumnData::Vectors {
                dim: r.n_components,
                values: r.projections.data().iter().map(|&v| v as f32).collect(),
            },
        ),
    ])
}

/// The fewest leading components whose explained-variance ratios add up to `fraction` of the total variance, if the
/// fitted ones get there.
pub fn components_for(r: &PcaResult, fraction: f64) -> Option<usize> {
    let mut cum = 0.0;
    r.explained_variance_ratio
        .iter()
        .take(r.n_components)
        .position(|&v| {
            cum += v;
            cum >= fraction
        })
        .map(|i| i + 1)
}

/// The variance shares the run summary reports: how many components reach each.
pub const VARIANCE_SHARES: [(f64, &str); 3] = [(0.5, "50pct"), (0.8, "80pct"), (0.9, "90pct")];

/// The variance figures of a PCA fit as metrics of stage `pca`.
pub fn pca_metrics(r: &PcaResult, m: &mut Metrics) {
    m.push("pca", "n_components", r.n_components as f64);
    m.push("pca", "total_variance", r.total_variance);
    m.push("pca", "noise_variance", r.noise_variance);
    m.push("pca", "explained_variance_ratio_sum", r.explained_variance_ratio.iter().sum());
    for (share, name) in VARIANCE_SHARES {
        if let Some(c) = components_for(r, share) {
            m.push("pca", &format!("components_for_{name}_variance"), c as f64);
        }
    }
    let mut cum = 0.0;
    for i in 0..r.n_components {
        cum += r.explained_variance_ratio[i];
        m.push_at("pca", "explained_variance", i as i64, r.explained_variance[i]);
        m.push_at("pca", "explained_variance_ratio", i as i64, r.explained_variance_ratio[i]);
        m.push_at("pca", "cumulative_explained_variance_ratio", i as i64, cum);
        m.push_at("pca", "singular_value", i as i64, r.singular_values[i]);
    }
}

/// `embeddings.parquet`: item, item_id, frequency (train users with the item), vector (the input-side embedding,
/// d float32), out_vector (the item's column of the output layer, float32).
pub fn embeddings(out: &ModelOutput, items: &[String]) -> Table {
    let Shape { items: v, dim: d, .. } = out.shape;
    let pre = out.shape.pre_logits();
    // w2 is pre×V row-major: item i's output vector is column i.
    let mut out_vectors = Vec::with_capacity(v * pre);
    for i in 0..v {
        for r in 0..pre {
            out_vectors.push(out.params.w2[r * v + i]);
        }
    }
    Table::new(vec![
        ("item", ColumnData::Str(items.to_vec())),
        ("item_id", ColumnData::I32((0..v as i32).collect())),
        ("frequency", ColumnData::I64(out.popularity.iter().map(|&p| p as i64).collect())),
        ("vector", ColumnData::Vectors { dim: d, values: out.params.emb.clone() }),
        ("out_vector", ColumnData::Vectors { dim: pre, values: out_vectors }),
    ])
}

/// `neighbors.parquet`: item, item_id, rank (1 = nearest), neighbor, neighbor_id, cosine.
pub fn neighbors(out: &ModelOutput, items: &[String]) -> Table {
    let k = out.neighbors_per_item;
    let v = items.len();
    let mut item = Vec::with_capacity(v * k);
    let mut item_id = Vec::with_capacity(v * k);
    let mut rank = Vec::with_capacity(v * k);
    let mut nb = Vec::with_capacity(v * k);
    let mut nb_id = Vec::with_capacity(v * k);
    for i in 0..v {
        for r in 0..k {
            let j = out.neighbors[i * k + r] as usize;
            item.push(items[i].clone());
            item_id.push(i as i32);
            rank.push(r as i32 + 1);
            nb.push(items[j].clone());
            nb_id.push(j as i32);
        }
    }
    Table::new(vec![
        ("item", ColumnData::Str(item)),
        ("item_id", ColumnData::I32(item_id)),
        ("rank", ColumnData::I32(rank)),
        ("neighbor", ColumnData::Str(nb)),
        ("neighbor_id", ColumnData::I32(nb_id)),
        ("cosine", ColumnData::F64(out.neighbor_cosines.iter().map(|&c| c as f64).collect())),
    ])
}
