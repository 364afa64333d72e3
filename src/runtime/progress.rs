//! How the pipeline tells the outside world what it is doing. The CLI implements [`Reporter`] with progress bars;
//! the library never prints.

/// Receives progress and summaries from a run. Every method has a do-nothing default.
pub trait Reporter: Sync {
    /// A stage starts; `total` is the number of work units when known.
    fn stage_started(&self, _stage: &str, _total: Option<u64>) {}
    /// `done` work units of the current stage are finished; `message` says what (e.g. the running loss).
    fn progress(&self, _done: u64, _message: &str) {}
    /// A stage ended: a one-line summary and its wall time.
    fn stage_finished(&self, _stage: &str, _summary: &str, _seconds: f64) {}
    /// Something the user should know (a fallback, dropped rows).
    fn notice(&self, _message: &str) {}
}

/// A reporter that reports nothing (tests, library use).
pub struct Silent;

impl Reporter for Silent {}
