//! The installation layout on each platform, checking an installation, and installing one into
//! the cache atomically.

use std::path::{Path, PathBuf};

use semver::Version;
use tokio::process::Command;

use super::{Binaries, MAJOR, SourceError};

/// A system the `PostgreSQL` binaries are published for (npm's `@embedded-postgres/<platform>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Linux on x86-64.
    LinuxX64,
    /// Linux on 64-bit ARM.
    LinuxArm64,
    /// macOS on Intel.
    DarwinX64,
    /// macOS on Apple silicon.
    DarwinArm64,
    /// Windows on x86-64.
    WindowsX64,
}

impl Platform {
    /// Every platform binaries are published for.
    pub const ALL: [Self; 5] = [
        Self::LinuxX64,
        Self::LinuxArm64,
        Self::DarwinX64,
        Self::DarwinArm64,
        Self::WindowsX64,
    ];

    /// The platform this program runs on.
    ///
    /// # Errors
    ///
    /// [`SourceError::NoPackage`] when no binaries are published for it.
    pub fn current() -> Result<Self, SourceError> {
        let (os, arch) = (std::env::consts::OS, std::env::consts::ARCH);
        Ok(match (os, arch) {
            ("linux", "x86_64") => Self::LinuxX64,
            ("linux", "aarch64") => Self::LinuxArm64,
            ("macos", "x86_64") => Self::DarwinX64,
            ("macos", "aarch64") => Self::DarwinArm64,
            ("windows", "x86_64") => Self::WindowsX64,
            _ => return Err(SourceError::NoPackage { os, arch }),
        })
    }

    /// npm's name for it (`@embedded-postgres/<name>`).
    #[must_use]
    pub fn npm_name(self) -> &'static str {
        match self {
            Self::LinuxX64 => "linux-x64",
            Self::LinuxArm64 => "linux-arm64",
            Self::DarwinX64 => "darwin-x64",
            Self::DarwinArm64 => "darwin-arm64",
            Self::WindowsX64 => "windows-x64",
        }
    }

    /// The installation's share directory (`pg_config --sharedir`), relative to it: Windows
    /// builds keep `share/` flat; the others nest it in `postgresql/`.
    #[must_use]
    pub fn share_dir(self) -> &'static str {
        match self {
            Self::WindowsX64 => "share",
            _ => "share/postgresql",
        }
    }

    /// The directory of loadable modules (`pg_config --pkglibdir`), relative to the
    /// installation; laid out as [`Self::share_dir`].
    #[must_use]
    pub fn module_dir(self) -> &'static str {
        match self {
            Self::WindowsX64 => "lib",
            _ => "lib/postgresql",
        }
    }

    /// The file name ending of a loadable module: `dll`, `dylib` or `so`.
    #[must_use]
    pub fn module_extension(self) -> &'static str {
        match self {
            Self::WindowsX64 => "dll",
            Self::DarwinX64 | Self::DarwinArm64 => "dylib",
            Self::LinuxX64 | Self::LinuxArm64 => "so",
        }
    }

    /// The files an installation must have for `initdb` and the server to work: the three
    /// executables, the catalog `initdb` loads, the configuration sample, and PL/pgSQL (which
    /// every database gets).
    #[must_use]
    pub fn required_files(self) -> Vec<PathBuf> {
        let exe = if self == Self::WindowsX64 { ".exe" } else { "" };
        let (share, lib, library) = (self.share_dir(), self.module_dir(), self.module_extension());
        let mut files: Vec<PathBuf> = ["postgres", "initdb", "pg_ctl"]
            .iter()
            .map(|executable| PathBuf::from(format!("bin/{executable}{exe}")))
            .collect();
        files.extend(
            [
                "postgres.bki",
                "postgresql.conf.sample",
                "extension/plpgsql.control",
            ]
            .iter()
            .map(|file| Path::new(share).join(file)),
        );
        files.push(Path::new(lib).join(format!("plpgsql.{library}")));
        files
    }

    /// The required files missing under `installation_dir`.
    #[must_use]
    pub fn missing_files(self, installation_dir: &Path) -> Vec<PathBuf> {
        self.required_files()
            .into_iter()
            .map(|file| installation_dir.join(file))
            .filter(|path| !path.is_file())
            .collect()
    }
}

/// Checks the installation's executables and runs `postgres --version`: the binaries of this
/// platform, `PostgreSQL` 16.
///
/// # Errors
///
/// [`SourceError`] naming the missing executable, or the version found.
pub async fn validate(installation_dir: &Path) -> Result<Binaries, SourceError> {
    let bin = installation_dir.join("bin");
    for executable in ["postgres", "initdb", "pg_ctl"] {
        let path = bin.join(format!("{executable}{}", std::env::consts::EXE_SUFFIX));
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => {}
            // There, but out of this user's reach: not the same fix as a missing file.
            Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(SourceError::Unreadable { path, source });
            }
            _ => return Err(SourceError::Missing(path)),
        }
    }
    let program = bin.join("postgres");
    let output = Command::new(&program)
        .arg("--version")
        .output()
        .await
        .map_err(|source| SourceError::CannotRun { program, source })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text
        .split_whitespace()
        .last()
        .and_then(parse_postgres_version)
        .ok_or_else(|| SourceError::UnknownVersion(text.trim().to_owned()))?;
    if version.major != MAJOR {
        return Err(SourceError::WrongVersion(version));
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

/// The newest usable 16.x installation in the cache.
pub(super) async fn cached(cache_dir: &Path) -> Result<Binaries, SourceError> {
    let entries = std::fs::read_dir(cache_dir).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            SourceError::Unreadable {
                path: cache_dir.to_owned(),
                source,
            }
        } else {
            SourceError::Io {
                action: "cannot read",
                path: cache_dir.to_owned(),
                source,
            }
        }
    })?;
    let mut versions: Vec<(Version, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = Version::parse(&entry.file_name().to_string_lossy()).ok()?;
            (version.major == MAJOR).then(|| (version, entry.path()))
        })
        .collect();
    versions.sort_by(|(a, _), (b, _)| b.cmp(a));
    let mut unusable = Vec::new();
    for (_, dir) in versions {
        match validate(&dir).await {
            Ok(binaries) => return Ok(binaries),
            Err(reason) => unusable.push((dir, reason)),
        }
    }
    if unusable.is_empty() {
        Err(SourceError::NothingCached)
    } else {
        Err(SourceError::CachedUnusable(unusable))
    }
}

/// Extracts into `<cache>/.staging-*`, checks `platform`'s layout, then renames it to
/// `<cache>/<version>` (`postgresql_embedded`'s layout) and returns that directory. A concurrent
/// run that got there first wins; ours is discarded.
pub(super) async fn install_atomically<F, Fut>(
    cache_dir: &Path,
    version: &Version,
    platform: Platform,
    extract: F,
) -> Result<PathBuf, SourceError>
where
    F: FnOnce(&Path) -> Fut,
    Fut: Future<Output = Result<(), SourceError>>,
{
    let io = SourceError::io;
    std::fs::create_dir_all(cache_dir).map_err(io("cannot create", cache_dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(cache_dir)
        .map_err(io("cannot create a directory in", cache_dir))?;
    extract(staging.path()).await?;
    let missing = platform.missing_files(staging.path());
    if !missing.is_empty() {
        return Err(SourceError::Incomplete(
            missing
                .iter()
                .filter_map(|path| path.strip_prefix(staging.path()).ok())
                .map(Path::to_owned)
                .collect(),
        ));
    }
    let final_dir = cache_dir.join(version.to_string());
    let staged = staging.keep();
    if std::fs::rename(&staged, &final_dir).is_err() {
        // Another process installed the same version meanwhile: use theirs.
        let _ = std::fs::remove_dir_all(&staged);
    }
    Ok(final_dir)
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
}
