//! PCA of the bag-of-words matrix, or of the numeric columns. The plan's `auto` choices are resolved here, once,
//! for the input's shape, before the memory plan and the fit.

use super::{Artifacts, Context, StageOutput};
use crate::data::dataset::Dataset;
use crate::error::{Error, Result};
use crate::linalg::dense::Matrix;
use crate::pca::{self, Components, PcaInput};
use crate::runtime::memory;
use crate::runtime::metrics::Metrics;
use crate::stages::output_tables::{self, FeatureKind};

pub fn run(ctx: &Context<'_>, artifacts: &mut Artifacts, metrics: &mut Metrics) -> Result<StageOutput> {
    let plan = ctx.plan.pca.as_ref().ok_or_else(|| Error::Internal("a pca stage without its plan".into()))?;
    let dataset = artifacts.dataset()?;
    let (input, names, kind) = match (&artifacts.bow, dataset) {
        (Some(bow), _) => (PcaInput::Sparse(bow.matrix.clone()), bow.tokens.clone(), FeatureKind::Token),
        (None, Dataset::Numeric(t)) => (
            PcaInput::Dense(Matrix::from_vec(t.rows, t.columns.len(), t.values.clone())?),
            t.columns.clone(),
            FeatureKind::Feature,
        ),
        (None, _) => return Err(Error::Internal("PCA planned without a matrix".into())),
    };
    let (rows, cols) = input.shape();
    let params = plan.resolve(rows, cols)?;
    let k = match params.components {
        Components::Count(k) => k,
        Components::VarianceFraction(_) => rows.min(cols),
    };
    let mem = crate::pca::memory_plan(rows, cols, params.solver, k, params.oversamples);
    ctx.reporter.notice(&memory::describe("pca", &mem));
    memory::check_or_physical("pca", &mem, ctx.plan.max_memory)?;
    let result = pca::fit(ctx.backend, input, &params, ctx.plan.seed)?;
    // How many components reach 50 / 80 / 90 % of the total variance ("> k": more than the fitted ones).
    let reach: Vec<String> = output_tables::VARIANCE_SHARES
        .iter()
        .map(|&(share, _)| match output_tables::components_for(&result, share) {
            Some(c) => format!("{:.0} %: {c}", share * 100.0),
            None => format!("{:.0} %: > {}", share * 100.0, result.n_components),
        })
        .collect();
    let summary = format!(
        "{} components explain {:.4} of the variance (components needed for {}) (solver {}: {})",
        result.n_components,
        result.explained_variance_ratio.iter().sum::<f64>(),
        reach.join(", "),
        format!("{:?}", result.solver).to_lowercase(),
        result.solver_reason
    );
    output_tables::pca_metrics(&result, metrics);
    let tables = vec![
        ("pca_components.parquet", output_tables::pca_components(&result, &names, kind)),
        ("pca_features.parquet", output_tables::pca_features(&result, &names, kind)),
        ("pca_projections.parquet", output_tables::pca_projections(&result, dataset.row_ids())),
    ];
    if ctx.plan.documents.is_some() {
        let p = &result.projections;
        let values = (0..p.rows()).flat_map(|r| p.row(r).iter().map(|&v| v as f32)).collect();
        artifacts.doc_vectors.push(super::DocVectors { method: "pca", dim: p.cols(), values });
    }
    let details = serde_json::json!({
        "solver": result.solver,
        "solver_reason": result.solver_reason,
        "n_components": result.n_components,
        "backend": ctx.backend.kind(),
    });
    Ok(StageOutput { tables, summary, details: Some(details), ..StageOutput::default() })
}
