//! Logging: `tracing` to stderr (human text, or JSON lines), and optionally to daily rolling
//! files, filtered by `RUST_LOG` (default given by the front end).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, fmt};

/// Installs the global subscriber once; later calls are ignored (tests call it repeatedly).
pub fn init(default_filter: &str) {
    init_with(default_filter, false, None);
}

/// As [`init`], with JSON output and a log directory (`pgharness.YYYY-MM-DD.log` files, as
/// JSON lines). Keep the returned guard alive: it flushes the files when dropped.
pub fn init_with(default_filter: &str, json: bool, dir: Option<&Path>) -> Option<WorkerGuard> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let console = if json {
        fmt::layer().json().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let appender = dir.and_then(|dir| {
        tracing_appender::rolling::RollingFileAppender::builder()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("pgharness")
            .filename_suffix("log")
            .build(dir)
            .inspect_err(|error| {
                eprintln!(
                    "⚠ no log files: cannot write to {} ({error}); set PGHARNESS_LOG_DIR",
                    dir.display()
                );
            })
            .ok()
    });
    let (file, guard) = match appender {
        Some(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(filter());
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let _ = tracing_subscriber::registry()
        .with(console.with_filter(filter()))
        .with(file)
        .try_init();
    guard
}
