//! Files and directories only their owner may read: the server's password, its data directory,
//! the test server's state. On Unix that is the mode (0600/0700); on Windows a new file inherits
//! its directory's access list, and the directories used (the user's data, cache and temporary
//! folders) are the user's own.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;

/// Creates `path` (and its parents) readable by its owner only.
///
/// # Errors
///
/// The I/O error of the creation or of restricting its permissions.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(path)?;
    restrict_dir(path)
}

/// A temporary directory others may pass through but not list (0711): as root, `PostgreSQL` runs
/// as another account, which must reach a throwaway server's home inside it.
///
/// # Errors
///
/// The I/O error of creating it.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("pgharness-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o711));
    }
    builder.tempdir()
}

/// Creates `path` if missing, and makes it (new or old) readable by its owner only.
///
/// # Errors
///
/// The I/O error of the creation or of restricting its permissions.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut options = File::options();
    options.create(true).append(true);
    owner_only(&mut options);
    drop(options.open(path)?);
    restrict_file(path)
}

/// Writes a file readable by its owner only, replacing any old one atomically (a reader sees
/// the old contents or the new, never half).
///
/// # Errors
///
/// The I/O error of writing the staging file or of renaming it into place.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let staging = path.with_extension("tmp");
    let mut options = File::options();
    options.create(true).truncate(true).write(true);
    owner_only(&mut options);
    let mut file = options.open(&staging)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&staging, path)
}

/// Makes `link` name the file `target` (a name in the same directory): a symbolic link on
/// Unix, a copy on Windows, where creating links needs a privilege most users lack.
///
/// # Errors
///
/// The I/O error of creating the link or the copy.
pub fn link_sibling(target: &Path, link: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(not(unix))]
    {
        let directory = link.parent().unwrap_or(Path::new("."));
        std::fs::copy(directory.join(target), link).map(|_| ())
    }
}

#[cfg(unix)]
fn owner_only(options: &mut OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt as _;
    options.mode(0o600);
}

#[cfg(not(unix))]
fn owner_only(_: &mut OpenOptions) {}

#[cfg(unix)]
fn restrict_dir(path: &Path) -> std::io::Result<()> {
    set_mode(path, 0o700)
}

#[cfg(unix)]
fn restrict_file(path: &Path) -> std::io::Result<()> {
    set_mode(path, 0o600)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature of the Unix version"
)]
fn restrict_dir(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(not(unix))]
#[expect(
    clippy::unnecessary_wraps,
    reason = "the signature of the Unix version"
)]
fn restrict_file(_: &Path) -> std::io::Result<()> {
    Ok(())
}
