//! Who runs the server of a data directory: the process holding its lock (`harness.lock`) owns
//! it and reports it ready in `server.json`; any other process attaches to it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::supervisor::Incidents;
use super::{
    EmbeddedServer, Privilege, ServerError, ServerOptions, io_error, read_password, write_private,
};
use crate::binaries::Binaries;

/// How long an attaching process waits for the owner to report its server ready.
const ATTACH_TIMEOUT: Duration = Duration::from_mins(1);

/// Who stops the server.
#[derive(Debug)]
pub(super) enum Role {
    Owner { lock: File },
    Attached { owner_pid: u32 },
}

/// `server.json`: the running server's port and owner.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ServerState {
    pub(super) port: u16,
    pub(super) owner_pid: u32,
    /// Absent: the server listens on TCP only (as written by earlier versions).
    #[serde(default)]
    socket_dir: Option<PathBuf>,
}

/// This process's claim on a data directory.
pub(super) enum Claim {
    /// It holds the lock: it starts and stops the server.
    Owner(File),
    /// Another process runs the server; this one uses it.
    Attached(Box<EmbeddedServer>),
}

impl EmbeddedServer {
    /// Owner or attached: a process racing the owner's shutdown waits for it to finish, then
    /// takes the data directory over, instead of attaching to a server about to go.
    pub(super) async fn claim(
        binaries: &Binaries,
        privilege: &Privilege,
        options: &ServerOptions,
    ) -> Result<Claim, ServerError> {
        let home = &options.home;
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            if let Some(lock) = try_lock_home(home)? {
                return Ok(Claim::Owner(lock));
            }
            if let Some(server) = Self::try_attach(binaries, privilege, options).await? {
                return Ok(Claim::Attached(Box::new(server)));
            }
            if Instant::now() > deadline {
                return Err(ServerError::AttachTimeout {
                    owner: read_state(home)
                        .map_or_else(|| "unknown".to_owned(), |state| state.owner_pid.to_string()),
                    path: home.clone(),
                    seconds: ATTACH_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `server.json`: this process owns the server on its port.
    pub(super) fn write_state(&self) -> Result<(), ServerError> {
        let state = ServerState {
            port: self.port,
            owner_pid: std::process::id(),
            socket_dir: self.socket_dir.clone(),
        };
        write_private(
            &self.home.join("server.json"),
            &serde_json::to_vec(&state).unwrap_or_default(),
        )
    }

    /// Attaches to the server another process owns, once it reports it ready; `None` while
    /// there is none to attach to (it is starting, or its owner is stopping it).
    async fn try_attach(
        binaries: &Binaries,
        privilege: &Privilege,
        options: &ServerOptions,
    ) -> Result<Option<Self>, ServerError> {
        let Some(state) = read_state(&options.home) else {
            return Ok(None);
        };
        let password = read_password(&options.home.join("password")).ok_or_else(|| {
            ServerError::MissingPassword {
                path: options.home.clone(),
            }
        })?;
        let server = Self {
            binaries: binaries.clone(),
            privilege: privilege.clone(),
            home: options.home.clone(),
            port: state.port,
            socket_dir: state.socket_dir,
            password,
            database: options.database.clone(),
            role: Mutex::new(Role::Attached {
                owner_pid: state.owner_pid,
            }),
            options: options.clone(),
            running: AtomicBool::new(true),
            incidents: Incidents::default(),
            control: tokio::sync::Mutex::new(()),
        };
        match server.ensure_database().await {
            Ok(()) => {}
            // Its owner is stopping it: wait, then take over or attach to the next one.
            Err(ServerError::Database { source, .. })
                if crate::database::is_connection_lost(&source) =>
            {
                debug!(%source, "the server to attach to went away; waiting for its owner");
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
        info!(
            port = state.port,
            owner_pid = state.owner_pid,
            "attached to the embedded server run by another pgharness"
        );
        Ok(Some(server))
    }
}

/// The data directory's lock (`harness.lock`), when no other process holds it.
pub(super) fn try_lock_home(home: &Path) -> Result<Option<File>, ServerError> {
    let lock_path = home.join("harness.lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| io_error("cannot open", &lock_path, source))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(source)) => {
            Err(io_error("cannot lock", &lock_path, source))
        }
    }
}

/// `server.json`, when a server has been reported ready.
pub(super) fn read_state(home: &Path) -> Option<ServerState> {
    serde_json::from_slice(&std::fs::read(home.join("server.json")).ok()?).ok()
}
