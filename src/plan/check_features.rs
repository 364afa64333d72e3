//! `[bow]` and `[pca]` checked into the parameters of the bag-of-words and the PCA fit. PCA's `auto` choices need
//! the input's shape and are resolved when it is known ([`PcaPlan::resolve`]).

use super::config::{BowConfig, ComponentsSpec, DfBound, PcaConfig, PcaSolver};
use super::problems::Problems;
use crate::error::{Error, Result};
use crate::text::vectorizer::BowParams;

/// PCA options.
#[derive(Debug, Clone)]
pub struct PcaPlan {
    pub n_components: ComponentsSpec,
    pub whiten: bool,
    pub standardize: bool,
    pub solver: PcaSolver,
    pub oversamples: usize,
    pub power_iterations: Option<usize>,
}

impl PcaPlan {
    /// The fit's parameters for a `rows` × `cols` input: the component count checked against the rank bound and
    /// `auto` resolved to a solver (with the reason run.json records). The one place `auto` is decided.
    pub fn resolve(&self, rows: usize, cols: usize) -> Result<crate::pca::PcaParams> {
        use crate::pca::{choose_solver, Components, Solver};
        let rank_bound = rows.min(cols);
        let components = match self.n_components {
            ComponentsSpec::Count(k) => {
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                if k > rank_bound {
                    return Err(Error::Stage {
                        stage: "pca",
                        message: format!(
                            "pca.n_components = {k} is more than min(rows, features) = min({rows}, {cols}) = {rank_bound}"
                        ),
                    });
                }
                Components::Count(k)
            }
            ComponentsSpec::VarianceFraction(f) => Components::VarianceFraction(f),
        };
        let requested = match self.solver {
            PcaSolver::Auto => None,
            PcaSolver::Covariance => Some(Solver::Covariance),
            PcaSolver::Gram => Some(Solver::Gram),
            PcaSolver::Randomized => Some(Solver::Randomized),
            PcaSolver::Lanczos => Some(Solver::Lanczos),
        };
        let wanted = match components {
            Components::Count(k) => Some(k),
            Components::VarianceFraction(_) => None,
        };
        let (solver, solver_reason) = choose_solver(requested, rows, cols, wanted);
        Ok(crate::pca::PcaParams {
            components,
            whiten: self.whiten,
            standardize: self.standardize,
            solver,
            solver_reason,
            oversamples: self.oversamples,
            power_iterations: self.power_iterations.unwrap_or(crate::pca::DEFAULT_POWER_ITERATIONS),
        })
    }
}

pub(super) fn plan_bow(bow: BowConfig, problems: &mut Problems) -> Option<BowParams> {
    let token_pattern = match crate::text::token_pattern::TokenPattern::new(&bow.token_pattern) {
        Ok(re) => Some(re),
        Err(e) => {
            problems.add("bow.token_pattern", format!("not a valid regular expression: {e}"));
            None
        }
    };
    let mut ok = token_pattern.is_some();
    match (bow.min_df, bow.max_df) {
        (DfBound::Count(lo), DfBound::Count(hi)) if lo > hi => {
            problems.add("bow.min_df", format!("min_df ({lo}) is above max_df ({hi})"));
            ok = false;
        }
        (DfBound::Fraction(lo), DfBound::Fraction(hi)) if lo > hi => {
            problems.add("bow.min_df", format!("min_df ({lo}) is above max_df ({hi})"));
            ok = false;
        }
        _ => {}
    }
    if bow.max_df == DfBound::Count(0) || bow.max_df == DfBound::Fraction(0.0) {
        problems.add("bow.max_df", "0 would remove every token");
        ok = false;
    }
    if bow.max_features == Some(0) {
        problems.add("bow.max_features", "must be at least 1 (leave it out for no limit)");
        ok = false;
    }
    let max_features = bow.max_features.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    if !ok {
        return None;
    }
    Some(BowParams {
        lowercase: bow.lowercase,
        token_pattern: token_pattern?,
        stop_words: bow.stop_words,
        min_df: bow.min_df,
        max_df: bow.max_df,
        max_features,
        weighting: bow.weighting,
    })
}

pub(super) fn plan_pca(pca: &PcaConfig, problems: &mut Problems) -> Option<PcaPlan> {
    let mut ok = true;
    if pca.solver != PcaSolver::Randomized {
        if pca.oversamples.is_some() {
            problems.add("pca.oversamples", "only applies to solver = \"randomized\"");
            ok = false;
        }
        if pca.power_iterations.is_some() {
            problems.add("pca.power_iterations", "only applies to solver = \"randomized\"");
            ok = false;
        }
    }
    if matches!(pca.solver, PcaSolver::Randomized | PcaSolver::Lanczos) {
        if let ComponentsSpec::VarianceFraction(_) = pca.n_components {
            let solver = if pca.solver == PcaSolver::Lanczos { "lanczos" } else { "randomized" };
            problems.add(
                "pca.n_components",
                format!("a variance fraction needs every eigenvalue; use an integer with solver = \"{solver}\""),
            );
            ok = false;
        }
    }
    if pca.power_iterations.is_some_and(|p| p > 100) {
        problems.add("pca.power_iterations", "more than 100 power iterations gain nothing; use at most 100");
        ok = false;
    }
    if pca.oversamples.is_some_and(|p| p > 10_000) {
        problems.add("pca.oversamples", "must be at most 10000");
        ok = false;
    }
    ok.then(|| PcaPlan {
        n_components: pca.n_components,
        whiten: pca.whiten,
        standardize: pca.standardize,
        solver: pca.solver,
        oversamples: pca.oversamples.unwrap_or(10) as usize,
        power_iterations: pca.power_iterations.map(|p| p as usize),
    })
}
