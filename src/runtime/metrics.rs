//! Metrics in long form: one row per (stage, metric, index), values as f64. Written to `metrics.parquet`.

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub stage: String,
    pub metric: String,
    /// Component, k, epoch, ...; `None` for a scalar.
    pub index: Option<i64>,
    pub value: f64,
}

/// The metrics of a run, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    pub rows: Vec<Metric>,
}

impl Metrics {
    /// Records a scalar metric.
    pub fn push(&mut self, stage: &str, metric: &str, value: f64) {
        self.rows.push(Metric { stage: stage.into(), metric: metric.into(), index: None, value });
    }

    /// Records an indexed metric (per component, per k, per epoch).
    pub fn push_at(&mut self, stage: &str, metric: &str, index: i64, value: f64) {
        self.rows.push(Metric { stage: stage.into(), metric: metric.into(), index: Some(index), value });
    }

    /// The value of a scalar metric, if recorded.
    pub fn get(&self, stage: &str, metric: &str) -> Option<f64> {
        self.rows.iter().find(|m| m.stage == stage && m.metric == metric && m.index.is_none()).map(|m| m.value)
    }
}
