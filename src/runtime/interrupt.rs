//! Cooperative cancellation: the CLI turns SIGINT / SIGTERM into a flag; the pipeline checks it between stages and
//! training steps and stops with [`crate::Error::Interrupted`], so the staging folder is removed and `latest` and
//! every earlier run stay as they were.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// 0: none; 1: SIGINT; 2: SIGTERM. The signal handlers (signal-hook's flag handlers) store into it.
fn flag() -> &'static Arc<AtomicUsize> {
    static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Installs handlers that turn SIGINT and SIGTERM into a stop request (Unix; elsewhere nothing is installed).
pub fn install_handlers() {
    #[cfg(unix)]
    {
        let _ = signal_hook::flag::register_usize(signal_hook::consts::SIGINT, Arc::clone(flag()), 1);
        let _ = signal_hook::flag::register_usize(signal_hook::consts::SIGTERM, Arc::clone(flag()), 2);
    }
}

pub use crate::error::Signal;

/// The pending stop request, if any.
pub fn pending() -> Option<Signal> {
    match flag().load(Ordering::SeqCst) {
        1 => Some(Signal::Interrupt),
        2 => Some(Signal::Terminate),
        _ => None,
    }
}

/// `Err(Interrupted)` when a stop was requested.
pub fn check() -> crate::error::Result<()> {
    match pending() {
        Some(s) => Err(crate::error::Error::Interrupted(s)),
        None => Ok(()),
    }
}
