//! PostgreSQL refuses to run as root. When this process is root (CI, containers) the server's
//! commands run either inside a user namespace (`unshare -U`: there the process is not root,
//! yet it still owns the files it creates), or, where user namespaces are forbidden, as an
//! unprivileged account whose files the data directory then belongs to.

use std::ffi::OsString;
use std::path::Path;
use std::sync::OnceLock;

use nix::unistd::{Gid, Uid, User};
use std::process::Command;
use tracing::info;

/// `PGHARNESS_RUN_AS`: the account used when root and user namespaces are unavailable.
const DEFAULT_ACCOUNT: &str = "nobody";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Not root: run the commands as they are.
    Direct,
    /// Root: wrap every command in `unshare -U`.
    UserNamespace,
    /// Root without user namespaces: switch to this account.
    Account { name: String, uid: Uid, gid: Gid },
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "running as root, user namespaces are unavailable ({namespace_error}) and the fallback \
         account {account:?} does not exist. Run as a normal user, allow user namespaces, or set \
         PGHARNESS_RUN_AS to an unprivileged account"
    )]
    NoAccount {
        namespace_error: String,
        account: String,
    },
    #[error("PGHARNESS_ROOT_STRATEGY={0:?} is not valid. Allowed: userns, account")]
    BadStrategy(String),
    #[error("cannot give {path} to account {account}: {message}")]
    Chown {
        path: String,
        account: String,
        message: String,
    },
}

impl Privilege {
    /// Chosen once per process: probing `unshare` costs a fork.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError`] when root and neither a user namespace nor the fallback account works.
    pub fn detect() -> Result<Self, PrivilegeError> {
        static DETECTED: OnceLock<Result<Privilege, String>> = OnceLock::new();
        let strategy = std::env::var("PGHARNESS_ROOT_STRATEGY").ok();
        if let Some(strategy) = strategy
            .as_deref()
            .filter(|value| !matches!(*value, "" | "userns" | "account"))
        {
            return Err(PrivilegeError::BadStrategy(strategy.to_owned()));
        }
        if !Uid::effective().is_root() {
            return Ok(Self::Direct);
        }
        let forced_account = strategy.as_deref() == Some("account");
        let namespace = if forced_account {
            Err("PGHARNESS_ROOT_STRATEGY=account".to_owned())
        } else {
            DETECTED
                .get_or_init(|| {
                    match std::process::Command::new("unshare")
                        .args(["-U", "true"])
                        .output()
                    {
                        Ok(output) if output.status.success() => Ok(Self::UserNamespace),
                        Ok(output) => {
                            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
                        }
                        Err(error) => Err(format!("cannot run unshare: {error}")),
                    }
                })
                .clone()
        };
        match namespace {
            Ok(privilege) => {
                info!("running as root: PostgreSQL runs inside a user namespace (unshare -U)");
                Ok(privilege)
            }
            Err(namespace_error) => {
                let account = std::env::var("PGHARNESS_RUN_AS")
                    .ok()
                    .filter(|value| !value.is_empty())
                    .unwrap_or_else(|| DEFAULT_ACCOUNT.to_owned());
                match User::from_name(&account) {
                    Ok(Some(user)) if !user.uid.is_root() => {
                        info!(account, %namespace_error, "running as root: PostgreSQL runs as an unprivileged account");
                        Ok(Self::Account {
                            name: account,
                            uid: user.uid,
                            gid: user.gid,
                        })
                    }
                    _ => Err(PrivilegeError::NoAccount {
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
            use std::os::unix::process::CommandExt as _;
            command.uid(uid.as_raw()).gid(gid.as_raw());
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
            nix::unistd::chown(path, Some(*uid), Some(*gid)).map_err(|error| {
                PrivilegeError::Chown {
                    path: path.display().to_string(),
                    account: name.clone(),
                    message: error.to_string(),
                }
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
