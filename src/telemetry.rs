//! Logging: `tracing` to stderr (human text, or JSON lines), and optionally to daily rolling
//! files, filtered by `RUST_LOG` (default given by the front end). Log files hold requests and
//! errors: their folder is the owner's only (0700), and so is each file (0600).

use std::path::{Path, PathBuf};

use chrono::{NaiveDate, Utc};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
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
        PrivateDailyFiles::open(dir)
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

const FILE_PREFIX: &str = "pgharness";
const FILE_SUFFIX: &str = "log";

/// Daily rolling files, each created owner-only before the appender (which has no setting for
/// the mode, and would create it readable by all under the usual umask) opens it.
struct PrivateDailyFiles {
    appender: RollingFileAppender,
    dir: PathBuf,
    /// The day whose file was last made private (UTC, as the appender names files).
    day: NaiveDate,
}

impl PrivateDailyFiles {
    /// Makes `dir` and the files already in it private, then opens today's file.
    fn open(dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        crate::platform::files::create_private_dir(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() && is_log_file(&path) {
                crate::platform::files::create_private_file(&path)?;
            }
        }
        let day = Utc::now().date_naive();
        crate::platform::files::create_private_file(&day_file(dir, day))?;
        let appender = RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(FILE_PREFIX)
            .filename_suffix(FILE_SUFFIX)
            .build(dir)?;
        Ok(Self {
            appender,
            dir: dir.to_owned(),
            day,
        })
    }
}

impl std::io::Write for PrivateDailyFiles {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let today = Utc::now().date_naive();
        if today != self.day {
            // Before the appender rolls over to it, so that the new file starts private.
            crate::platform::files::create_private_file(&day_file(&self.dir, today))?;
            self.day = today;
        }
        self.appender.write(buffer)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.appender.flush()
    }
}

/// The appender's file for `day`.
fn day_file(dir: &Path, day: NaiveDate) -> PathBuf {
    dir.join(format!(
        "{FILE_PREFIX}.{}.{FILE_SUFFIX}",
        day.format("%Y-%m-%d")
    ))
}

fn is_log_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| {
            name.starts_with(&format!("{FILE_PREFIX}."))
                && name.ends_with(&format!(".{FILE_SUFFIX}"))
        })
}
