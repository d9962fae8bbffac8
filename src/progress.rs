//! What a start reports while it works (binaries found or downloaded, server started,
//! migrations applied, API listening), for the CLI's progress bar and the desktop window.

use std::sync::Arc;

/// A sink that ignores progress (tests, benchmarks, background work).
#[must_use]
pub fn quiet() -> ProgressSink {
    Arc::new(|_| {})
}

/// One report of a start in progress.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A step begins (its description).
    Step(String),
    /// Bytes of a download received so far.
    Download {
        /// Bytes received.
        received: u64,
        /// The size announced, when it was.
        total: Option<u64>,
    },
    /// The start is over (done or failed).
    Done,
}

/// Where [`Progress`] goes.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;
