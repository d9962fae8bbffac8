//! PostgreSQL refuses to run as root. What each system does about it:
//! - Linux, as root (CI, containers): the server's commands run inside a user namespace
//!   (`unshare -U`: there the process is not root, yet it still owns the files it creates), or,
//!   where user namespaces are forbidden, as an unprivileged account (`PGHARNESS_RUN_AS`,
//!   default `nobody`) that the data directory is handed to;
//! - macOS, as root: the unprivileged account (macOS has no user namespaces);
//! - Windows: nothing to do here. `initdb` and `pg_ctl` started by an Administrator drop the
//!   administrative rights themselves (they restart under a restricted token).

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

use std::process::Command;
use tracing::info;

/// `PGHARNESS_RUN_AS`: the account used when root and user namespaces are unavailable.
const DEFAULT_ACCOUNT: &str = "nobody";

/// What to do when this process is root (`PGHARNESS_ROOT_STRATEGY`, `PGHARNESS_RUN_AS`; read by
/// [`Config`](crate::config::Config)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootSettings {
    /// How to leave root.
    pub strategy: RootStrategy,
    /// The unprivileged account to switch to.
    pub account: String,
}

impl Default for RootSettings {
    fn default() -> Self {
        Self {
            strategy: RootStrategy::Automatic,
            account: DEFAULT_ACCOUNT.to_owned(),
        }
    }
}

/// How to leave root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootStrategy {
    /// A user namespace where there are any (`userns`, the default), else the account.
    Automatic,
    /// Always the unprivileged account (`account`).
    Account,
}

/// How PostgreSQL's commands are run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Not root: run the commands as they are.
    Direct,
    /// Root: wrap every command in `unshare -U`.
    UserNamespace,
    /// Root without user namespaces: switch to this account.
    /// Root without user namespaces: switch to this account.
    Account {
        /// The account's name.
        name: String,
        /// Its user id.
        uid: u32,
        /// Its group id.
        gid: u32,
    },
}

/// Why the commands cannot run in a user namespace (what `unshare -U` said).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceUnavailable(String);

/// Why PostgreSQL cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "running as root, user namespaces are unavailable ({namespace_error}) and the fallback \
         account {account:?} does not exist. Run as a normal user, allow user namespaces, or set \
         PGHARNESS_RUN_AS to an unprivileged account"
    )]
    /// Root, no user namespaces, and no fallback account.
    NoAccount {
        /// Why user namespaces are unavailable.
        #[source]
        namespace_error: NamespaceUnavailable,
        /// The fallback account named.
        account: String,
    },
    /// The data directory cannot be given to the account.
    #[error("cannot give {} to account {account}: {source}", path.display())]
    Chown {
        /// The file.
        path: std::path::PathBuf,
        /// The account.
        account: String,
        /// What the system said.
        source: std::io::Error,
    },
}

impl Privilege {
    /// Chosen once per process: probing `unshare` costs a fork.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError`] when root and neither a user namespace nor the fallback account works.
    pub fn detect(settings: &RootSettings) -> Result<Self, PrivilegeError> {
        static DETECTED: OnceLock<Result<Privilege, NamespaceUnavailable>> = OnceLock::new();
        if !os::is_root() {
            return Ok(Self::Direct);
        }
        let namespace = if settings.strategy == RootStrategy::Account {
            Err(NamespaceUnavailable(
                "PGHARNESS_ROOT_STRATEGY=account".to_owned(),
            ))
        } else {
            DETECTED
                .get_or_init(|| os::probe_user_namespace().map(|()| Self::UserNamespace))
                .clone()
        };
        match namespace {
            Ok(privilege) => {
                info!("running as root: PostgreSQL runs inside a user namespace (unshare -U)");
                Ok(privilege)
            }
            Err(namespace_error) => {
                let account = settings.account.clone();
                match os::unprivileged_account(&account) {
                    Some((uid, gid)) => {
                        info!(account, %namespace_error, "running as root: PostgreSQL runs as an unprivileged account");
                        Ok(Self::Account {
                            name: account,
                            uid,
                            gid,
                        })
                    }
                    None => Err(PrivilegeError::NoAccount {
                        namespace_error,
                        account,
                    }),
                }
            }
        }
    }

    /// A command for `program` with `args` and `envs`, wrapped as this privilege needs.
    #[must_use]
    pub fn command(
        &self,
        program: &Path,
        args: &[OsString],
        envs: &[(OsString, OsString)],
    ) -> Command {
        let mut command = match self {
            Self::UserNamespace => {
                let mut command = Command::new("unshare");
                command.arg("-U").arg(program);
                command
            }
            Self::Direct | Self::Account { .. } => Command::new(program),
        };
        if let Self::Account { uid, gid, .. } = self {
            os::run_as(&mut command, *uid, *gid);
        }
        command
            .args(args)
            .envs(envs.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Makes `path` (recursively) belong to the account the server runs as.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Chown`] when ownership cannot be changed.
    pub fn hand_over(&self, path: &Path) -> Result<(), PrivilegeError> {
        let Self::Account { name, uid, gid } = self else {
            return Ok(());
        };
        let chown = |path: &Path| {
            os::chown(path, *uid, *gid).map_err(|source| PrivilegeError::Chown {
                path: path.to_owned(),
                account: name.clone(),
                source,
            })
        };
        chown(path)?;
        if path.is_dir() {
            for entry in walk(path) {
                chown(&entry)?;
            }
        }
        Ok(())
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
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

    use super::NamespaceUnavailable;

    use rustix::process::{geteuid, getuid};

    pub fn is_root() -> bool {
        geteuid().is_root()
    }

    pub fn user_tag() -> String {
        getuid().as_raw().to_string()
    }

    #[cfg(target_os = "linux")]
    pub fn probe_user_namespace() -> Result<(), NamespaceUnavailable> {
        match Command::new("unshare").args(["-U", "true"]).output() {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(NamespaceUnavailable(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            )),
            Err(error) => Err(NamespaceUnavailable(format!("cannot run unshare: {error}"))),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn probe_user_namespace() -> Result<(), NamespaceUnavailable> {
        Err(NamespaceUnavailable(
            "user namespaces exist only on Linux".to_owned(),
        ))
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
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
    }
}

/// Windows: never "root" here (see the module's documentation), so no account switch.
#[cfg(windows)]
mod os {
    use std::path::Path;
    use std::process::Command;

    use super::NamespaceUnavailable;

    pub fn is_root() -> bool {
        false
    }

    pub fn user_tag() -> String {
        std::env::var("USERNAME").unwrap_or_default()
    }

    pub fn probe_user_namespace() -> Result<(), NamespaceUnavailable> {
        Err(NamespaceUnavailable(
            "user namespaces exist only on Linux".to_owned(),
        ))
    }

    pub fn unprivileged_account(_: &str) -> Option<(u32, u32)> {
        None
    }

    pub fn run_as(_: &mut Command, _: u32, _: u32) {}

    pub fn chown(_: &Path, _: u32, _: u32) -> std::io::Result<()> {
        Ok(())
    }
}
