//! `PostgreSQL` refuses to run as root. What each system does about it:
//! - Linux and macOS, as root (CI, containers): the server's commands run as an unprivileged
//!   account (`PGHARNESS_RUN_AS`, default `nobody`) that the server's files are handed to. Never
//!   a user namespace without a uid map: there `PostgreSQL` only looks unprivileged, and the kernel
//!   still checks its files, and the programs `COPY … TO PROGRAM` starts, as uid 0. The account
//!   must reach the binaries and the data directory, so as root they default to `/var/cache`
//!   and `/var/lib` rather than root's home, and a path it cannot reach is an error that says so;
//! - Windows: nothing to do here. `initdb` and `pg_ctl` started by an Administrator drop the
//!   administrative rights themselves (they restart under a restricted token).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use std::process::Command;
use tracing::info;

/// `PGHARNESS_RUN_AS`: the account used when root.
const DEFAULT_ACCOUNT: &str = "nobody";

/// Who runs `PostgreSQL` when this process is root (`PGHARNESS_RUN_AS`; read by
/// [`Config`](crate::config::Config)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSettings {
    /// The unprivileged account to switch to.
    pub account: String,
}

impl Default for RootSettings {
    fn default() -> Self {
        Self {
            account: DEFAULT_ACCOUNT.to_owned(),
        }
    }
}

/// How `PostgreSQL`'s commands are run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Privilege {
    /// Not root: run the commands as they are.
    Direct,
    /// Root: switch to this account.
    Account {
        /// The account's name.
        name: String,
        /// Its user id.
        uid: u32,
        /// Its group id.
        gid: u32,
    },
}

/// Why `PostgreSQL` cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "running as root, PostgreSQL must run as an unprivileged account, and {account:?} does \
         not exist. Run as a normal user, or set PGHARNESS_RUN_AS to an existing unprivileged \
         account"
    )]
    /// Root, and the account does not exist (or is root).
    NoAccount {
        /// The account named.
        account: String,
    },
    /// The account cannot reach a directory `PostgreSQL` needs.
    #[error(
        "running as root, PostgreSQL runs as the unprivileged account {account:?}, which cannot \
         reach {}: {} is closed to it. Set {variable} to a directory outside root's home (for \
         example {example}), or PGHARNESS_RUN_AS to an account that can reach it",
        path.display(), blocked.display()
    )]
    Unreachable {
        /// The directory needed.
        path: PathBuf,
        /// The first directory on the way that the account may not enter.
        blocked: PathBuf,
        /// The account.
        account: String,
        /// The setting that names the directory.
        variable: &'static str,
        /// A directory that works.
        example: &'static str,
    },
    /// The data directory cannot be given to the account.
    #[error("cannot give {} to account {account}: {source}", path.display())]
    Chown {
        /// The file.
        path: PathBuf,
        /// The account.
        account: String,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Whether this process is root (then `PostgreSQL` runs as another account).
#[must_use]
pub fn is_root() -> bool {
    os::is_root()
}

impl Privilege {
    /// Direct, or as root the account of `settings`.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::NoAccount`] when root and the account does not exist or is root.
    pub fn detect(settings: &RootSettings) -> Result<Self, PrivilegeError> {
        if !os::is_root() {
            return Ok(Self::Direct);
        }
        let account = settings.account.clone();
        match os::unprivileged_account(&account) {
            Some((uid, gid)) => {
                info!(
                    account,
                    uid, "running as root: PostgreSQL runs as an unprivileged account"
                );
                Ok(Self::Account {
                    name: account,
                    uid,
                    gid,
                })
            }
            None => Err(PrivilegeError::NoAccount { account }),
        }
    }

    /// A command for `program` with `args` and `envs`, run as this privilege needs.
    #[must_use]
    pub fn command(
        &self,
        program: &Path,
        args: &[OsString],
        envs: &[(OsString, OsString)],
    ) -> Command {
        let mut command = Command::new(program);
        if let Self::Account { uid, gid, .. } = self {
            os::run_as(&mut command, *uid, *gid);
        }
        command
            .args(args)
            .envs(envs.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Checks that the account can pass through every directory leading to `path` (named by
    /// `variable`), so that `PostgreSQL`'s failure is not the first word on it.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Unreachable`] naming the first directory on the way it may not enter.
    pub fn ensure_reachable(
        &self,
        path: &Path,
        variable: &'static str,
        example: &'static str,
    ) -> Result<(), PrivilegeError> {
        let Self::Account { name, uid, gid } = self else {
            return Ok(());
        };
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        for directory in path
            .ancestors()
            .skip(1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !os::can_enter(directory, *uid, *gid) {
                return Err(PrivilegeError::Unreachable {
                    path: path.clone(),
                    blocked: directory.to_owned(),
                    account: name.clone(),
                    variable,
                    example,
                });
            }
        }
        Ok(())
    }

    /// Makes `path` (recursively) belong to the account the server runs as.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Chown`] when ownership cannot be changed.
    pub fn hand_over(&self, path: &Path) -> Result<(), PrivilegeError> {
        self.hand_over_one(path)?;
        if path.is_dir() {
            for entry in walk(path) {
                self.hand_over_one(&entry)?;
            }
        }
        Ok(())
    }

    /// Makes `path` alone (not what a directory holds) belong to the account.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Chown`] when ownership cannot be changed.
    pub fn hand_over_one(&self, path: &Path) -> Result<(), PrivilegeError> {
        let Self::Account { name, uid, gid } = self else {
            return Ok(());
        };
        os::chown(path, *uid, *gid).map_err(|source| PrivilegeError::Chown {
            path: path.to_owned(),
            account: name.clone(),
            source,
        })
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                found.extend(walk(&path));
            }
            found.push(path);
        }
    }
    found
}

/// A short name for this user, to keep users of one machine apart in a shared directory.
#[must_use]
pub fn user_tag() -> String {
    os::user_tag()
}

/// The system calls behind the policy above.
#[cfg(unix)]
mod os {
    use std::path::Path;
    use std::process::Command;

    use rustix::process::{geteuid, getuid};

    pub fn is_root() -> bool {
        geteuid().is_root()
    }

    pub fn user_tag() -> String {
        getuid().as_raw().to_string()
    }

    /// The uid and gid of `name`, if it exists and is not root.
    pub fn unprivileged_account(name: &str) -> Option<(u32, u32)> {
        let user = uzers::get_user_by_name(name)?;
        (user.uid() != 0).then(|| (user.uid(), user.primary_group_id()))
    }

    pub fn run_as(command: &mut Command, uid: u32, gid: u32) {
        use std::os::unix::process::CommandExt as _;
        command.uid(uid).gid(gid);
    }

    pub fn chown(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
    }

    /// Whether `uid`/`gid` may search `directory` (its mode bits; access lists aside).
    pub fn can_enter(directory: &Path, uid: u32, gid: u32) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(metadata) = std::fs::metadata(directory) else {
            // Not there yet: it is created by root for the account, or the start says why.
            return true;
        };
        let mode = metadata.mode();
        if metadata.uid() == uid {
            mode & 0o100 != 0
        } else if metadata.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }
}

/// Windows: never "root" here (see the module's documentation), so no account switch.
#[cfg(windows)]
mod os {
    use std::path::Path;
    use std::process::Command;

    pub fn is_root() -> bool {
        false
    }

    pub fn user_tag() -> String {
        std::env::var("USERNAME").unwrap_or_default()
    }

    pub fn unprivileged_account(_: &str) -> Option<(u32, u32)> {
        None
    }

    pub fn run_as(_: &mut Command, _: u32, _: u32) {}

    #[expect(
        clippy::unnecessary_wraps,
        reason = "the signature of the Unix version"
    )]
    pub fn chown(_: &Path, _: u32, _: u32) -> std::io::Result<()> {
        Ok(())
    }

    pub fn can_enter(_: &Path, _: u32, _: u32) -> bool {
        true
    }
}
