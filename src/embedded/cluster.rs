//! Creating a cluster (data directory) and cleaning up after a killed owner.
//!
//! initdb takes 0.5–2.5 s on a 2-core machine, copying an initialised cluster about 50 ms. So
//! the first initdb of a `PostgreSQL` version is kept as a pristine template (with no password:
//! no one can log in to it) and every new cluster is a copy of it, given its own password in
//! single-user mode before the server first listens.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use postgresql_commands::initdb::InitDbBuilder;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt as _;
use tracing::{info, warn};

use super::command::{run, stop_builder};
use super::{CommandError, Privilege, ServerError, io_error, process};
use crate::binaries::Binaries;
use crate::platform::random;

/// Creates `pgdata` with `password` for the superuser.
pub(super) async fn create(
    binaries: &Binaries,
    privilege: &Privilege,
    pgdata: &Path,
    password: &SecretString,
    durable: bool,
) -> Result<(), ServerError> {
    let staging = pgdata.with_extension("creating");
    remove_if_present(&staging)?;
    let template = template_dir(binaries);
    if template.join("PG_VERSION").exists() {
        copy_tree(&template, &staging)?;
        privilege.hand_over(&staging)?;
    } else {
        initdb(binaries, privilege, &staging).await?;
        keep_as_template(&staging, &template);
    }
    set_password(binaries, privilege, &staging, password).await?;
    if durable {
        let sync = InitDbBuilder::new()
            .program_dir(binaries.bin_dir())
            .pgdata(&staging)
            .sync_only();
        run(privilege, sync, "initdb --sync-only").await?;
    }
    std::fs::rename(&staging, pgdata).map_err(|source| io_error("cannot create", pgdata, source))
}

/// Where the pristine cluster of these binaries is kept.
fn template_dir(binaries: &Binaries) -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("pgharness")
        .join("clusters")
        .join(binaries.version.to_string())
}

async fn initdb(
    binaries: &Binaries,
    privilege: &Privilege,
    target: &Path,
) -> Result<(), ServerError> {
    let parent = target.parent().unwrap_or(target);
    // initdb insists on a password for password authentication; this one is thrown away
    // (replaced in single-user mode), so the template holds no usable credential.
    let throwaway_password = parent.join("initdb-password");
    let password = random::alphanumeric(32)
        .map_err(|source| super::io_error("cannot make a password for", target, source))?;
    super::write_private(&throwaway_password, password.as_bytes())?;
    privilege.hand_over_one(parent)?;
    privilege.hand_over_one(&throwaway_password)?;
    let started = std::time::Instant::now();
    let builder = InitDbBuilder::new()
        .program_dir(binaries.bin_dir())
        .pgdata(target)
        .username(super::SUPERUSER)
        .encoding("UTF8")
        .locale("C")
        .auth_host("scram-sha-256")
        .auth_local("scram-sha-256")
        .pwfile(&throwaway_password)
        .no_sync()
        .no_instructions();
    let result = run(privilege, builder, "initdb").await;
    remove_if_present(&throwaway_password)?;
    result?;
    info!(
        elapsed_ms = started.elapsed().as_millis(),
        "initialised a new PostgreSQL cluster"
    );
    Ok(())
}

/// Best effort: a cache that cannot be written only makes the next new cluster slower.
fn keep_as_template(cluster: &Path, template: &Path) {
    let Some(parent) = template.parent() else {
        return;
    };
    let kept = std::fs::create_dir_all(parent)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".template-")
                .tempdir_in(parent)
        })
        .and_then(|staging| {
            copy_tree(cluster, staging.path()).map_err(std::io::Error::other)?;
            // Losing this race to a concurrent run is fine: its template is as good.
            std::fs::rename(staging.path(), template).or_else(|error| {
                if template.join("PG_VERSION").exists() {
                    Ok(())
                } else {
                    Err(error)
                }
            })
        });
    if let Err(error) = kept {
        warn!(template = %template.display(), %error, "could not keep the cluster template");
    }
}

/// Sets the superuser password in single-user mode: no connection is possible meanwhile.
async fn set_password(
    binaries: &Binaries,
    privilege: &Privilege,
    pgdata: &Path,
    password: &SecretString,
) -> Result<(), ServerError> {
    let args = ["--single", "-D"]
        .iter()
        .map(Into::into)
        .chain([pgdata.as_os_str().to_owned(), "postgres".into()])
        .collect::<Vec<_>>();
    let mut command = tokio::process::Command::from(privilege.command(
        &binaries.bin_dir().join("postgres"),
        &args,
        &[],
    ));
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| io_error("cannot run postgres --single in", pgdata, source))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The password is generated alphanumeric, so it needs no quoting.
        let statement = format!(
            "ALTER ROLE {} PASSWORD '{}';\n",
            super::SUPERUSER,
            password.expose_secret()
        );
        stdin
            .write_all(statement.as_bytes())
            .await
            .map_err(|source| io_error("cannot talk to postgres --single in", pgdata, source))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|source| io_error("postgres --single failed in", pgdata, source))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || stderr.contains("ERROR") {
        return Err(ServerError::Command {
            command: "postgres --single",
            source: CommandError::Failed {
                program: binaries.bin_dir().join("postgres"),
                status: output.status,
                output: stderr.into_owned(),
            },
            server_log: None,
        });
    }
    Ok(())
}

/// Stops a server left running by an owner that was killed, and clears a stale pid file.
pub(super) async fn reap_orphan(
    binaries: &Binaries,
    privilege: &Privilege,
    pgdata: &Path,
) -> Result<(), ServerError> {
    let pid_file = pgdata.join("postmaster.pid");
    let Some(pid) = process::postmaster_pid(pgdata) else {
        return Ok(());
    };
    if process::is_postgres(pid) {
        warn!(
            pid,
            "a PostgreSQL server from an earlier run is still running on this data directory; stopping it"
        );
        run(
            privilege,
            stop_builder(binaries, pgdata),
            "pg_ctl stop (left-over server)",
        )
        .await?;
    } else {
        // The pid is gone or belongs to another program now: the file is stale.
        remove_if_present(&pid_file)?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), ServerError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("cannot remove", path, source))
        }
        _ => Ok(()),
    }
}

/// Copies a directory tree, keeping permissions (a cluster has no symlinks).
fn copy_tree(from: &Path, to: &Path) -> Result<(), ServerError> {
    std::fs::create_dir_all(to).map_err(|source| io_error("cannot create", to, source))?;
    let permissions = std::fs::metadata(from)
        .map_err(|source| io_error("cannot read", from, source))?
        .permissions();
    std::fs::set_permissions(to, permissions)
        .map_err(|source| io_error("cannot set permissions of", to, source))?;
    for entry in std::fs::read_dir(from).map_err(|source| io_error("cannot read", from, source))? {
        let entry = entry.map_err(|source| io_error("cannot read", from, source))?;
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .map_err(|source| io_error("cannot copy to", &target, source))?;
        }
    }
    Ok(())
}
