//! Why the embedded server cannot start, stop or be reached, and why a `PostgreSQL` command
//! failed.

use std::path::PathBuf;

use super::PrivilegeError;

/// Why the embedded server cannot start, stop or be reached.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `PostgreSQL` cannot be run as this user.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot create").
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    #[error(
        "{action} {}: {source}. {variable} chooses the data directory: point it at a directory \
         this user can create and write",
        path.display()
    )]
    /// The data directory a variable chose cannot be made or used.
    DataDir {
        /// What was being done ("cannot create").
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The variable that chose the directory.
        variable: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
    #[error(
        "port {port} on 127.0.0.1 is already in use. Stop the program using it \
         (e.g. `ss -ltnp 'sport = :{port}'`), or unset PGHARNESS_PG_PORT to use a free port"
    )]
    /// The configured port is taken.
    PortInUse {
        /// The port.
        port: u16,
    },
    #[error(
        "{path} holds a PostgreSQL cluster but its password file is missing, so the server \
         cannot be reached. Restore {path}/password, or move the directory away to start afresh \
         (no data is deleted by pgharness)"
    )]
    /// The cluster exists but its password file is gone.
    MissingPassword {
        /// The server home.
        path: PathBuf,
    },
    /// A `PostgreSQL` command failed.
    #[error("{command} failed: {source}{}", server_log.as_deref().map(|log| format!("\n{log}")).unwrap_or_default())]
    Command {
        /// Which (`initdb`, `pg_ctl start`, …).
        command: &'static str,
        /// How it failed.
        source: CommandError,
        /// What the server logged meanwhile, when it says more than the command.
        server_log: Option<String>,
    },
    #[error(
        "another pgharness (pid {owner}) holds {path} but did not report a running server within \
         {seconds} s. If it is stuck, stop it; then try again"
    )]
    /// Another process owns the server and did not report it running in time.
    AttachTimeout {
        /// That process's pid.
        owner: String,
        /// The data directory.
        path: PathBuf,
        /// How long it was waited for.
        seconds: u64,
    },
    #[error(
        "the embedded server is owned by another pgharness (pid {owner}); only that process can \
         stop or start it"
    )]
    /// Only the process that started the server may stop or start it.
    NotOwner {
        /// That process's pid.
        owner: u32,
    },
    #[error("{action}: {source}")]
    /// A statement on the server failed.
    Database {
        /// What was being done.
        action: String,
        /// The driver's error.
        source: sqlx::Error,
    },
}

/// Why a `PostgreSQL` command (`initdb`, `pg_ctl`) failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It did not finish in time (seconds).
    #[error("timed out after {0} s")]
    TimedOut(u64),
    /// It could not be started.
    #[error("cannot run {}: {source}", program.display())]
    CannotRun {
        /// The executable.
        program: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// It ended with a failure status.
    #[error("{} exited with {status}: {output}", program.display())]
    Failed {
        /// The executable.
        program: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        output: String,
    },
}
