//! Keeping the server running: an owner restarts a server that exited unexpectedly, an attached
//! process takes the server over when its owner stops; both counted for the events timeline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tracing::{error, info, warn};

use super::EmbeddedServer;
use super::command::read_from;
use super::ownership::{Role, read_state, try_lock_home};

/// How often an owned server's postmaster is checked for an unexpected exit.
const SUPERVISION_INTERVAL: Duration = Duration::from_millis(250);

/// What went wrong with the server while this handle watched it.
#[derive(Debug, Default)]
pub(super) struct Incidents {
    /// Why the server is down against its owner's will, while it is being restarted: shown by
    /// `/health` and the events to any client, so it names no file or folder.
    outage: Mutex<Option<String>>,
    /// The last failure to start it again, with its paths: logged once per cause.
    start_failure: Mutex<Option<String>>,
    /// Unexpected exits seen, and restarts after them.
    crashes: AtomicU64,
    recoveries: AtomicU64,
    /// Times this process took the server over from an owner that stopped.
    takeovers: AtomicU64,
}

impl Incidents {
    pub(super) fn set_outage(&self, cause: Option<String>) {
        *self.outage.lock().unwrap_or_else(PoisonError::into_inner) = cause;
    }

    /// The server exited unexpectedly, for `cause`.
    fn crashed(&self, cause: String) {
        self.crashes.fetch_add(1, Ordering::SeqCst);
        self.set_outage(Some(cause));
    }

    /// Whether `failure` differs from the last failure to start the server again (then it is
    /// remembered, to be logged once).
    fn new_start_failure(&self, failure: &impl std::fmt::Display) -> bool {
        let failure = failure.to_string();
        let mut last = self
            .start_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let new = last.as_deref() != Some(failure.as_str());
        *last = Some(failure);
        new
    }

    /// The server runs again after a crash.
    fn recovered(&self) {
        *self
            .start_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.recoveries.fetch_add(1, Ordering::SeqCst);
        self.set_outage(None);
    }

    /// This process runs the server now, its owner having stopped.
    fn took_over(&self) {
        self.takeovers.fetch_add(1, Ordering::SeqCst);
        self.set_outage(None);
    }
}

impl EmbeddedServer {
    /// Why the server is down while it should run, until it has been restarted.
    #[must_use]
    pub fn outage(&self) -> Option<String> {
        self.incidents
            .outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the server exited unexpectedly, and how many times it was started again
    /// after that, since this handle was made.
    #[must_use]
    pub fn crashes_and_recoveries(&self) -> (u64, u64) {
        (
            self.incidents.crashes.load(Ordering::SeqCst),
            self.incidents.recoveries.load(Ordering::SeqCst),
        )
    }

    /// How many times this process took the server over from an owner that stopped.
    #[must_use]
    pub fn takeovers(&self) -> u64 {
        self.incidents.takeovers.load(Ordering::SeqCst)
    }

    /// Watches the server until this value is dropped. Owned: if its postmaster exits
    /// unexpectedly (killed, out of memory), logs it and starts it again on the same data and
    /// port. Attached: when the owner stops (cleanly or killed), takes the data directory over
    /// and runs the server itself.
    pub fn supervise(self: &Arc<Self>) {
        let server = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SUPERVISION_INTERVAL).await;
                let Some(server) = Weak::upgrade(&server) else {
                    return;
                };
                if server.owner_pid().is_some() {
                    server.take_over_if_owner_left().await;
                } else {
                    server.recover_if_crashed().await;
                }
            }
        });
    }

    /// Attached: once no process holds the data directory's lock, its owner is gone; this one
    /// takes the lock and runs the server (the one a killed owner left running, or a new start
    /// on the same port). Another process that took over first becomes the owner named.
    async fn take_over_if_owner_left(&self) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let Ok(_guard) = self.control.try_lock() else {
            return;
        };
        let Some(previous_owner) = self.owner_pid() else {
            return;
        };
        let lock = match try_lock_home(&self.home) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                if let Some(state) = read_state(&self.home)
                    && state.owner_pid != previous_owner
                    && state.port == self.port
                {
                    *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Role::Attached {
                        owner_pid: state.owner_pid,
                    };
                }
                return;
            }
            Err(error) => {
                warn!(%error, "cannot tell whether the embedded server's owner is still running");
                return;
            }
        };
        let cause = format!(
            "the pgharness that ran the embedded server (pid {previous_owner}) stopped; this one \
             is taking the server over"
        );
        if self.outage().is_none() {
            warn!("{cause}");
        }
        self.incidents.set_outage(Some(cause));
        let started = if self.postmaster_alive() {
            // Left running by an owner that was killed: keep serving it as it is.
            Ok(())
        } else {
            self.start_on_same_port().await
        };
        let result = started.and_then(|()| {
            *self.role.lock().unwrap_or_else(PoisonError::into_inner) = Role::Owner { lock };
            self.write_state()
        });
        match result {
            Ok(()) => {
                info!(
                    port = self.port,
                    previous_owner, "took over the embedded server from a pgharness that stopped"
                );
                self.incidents.took_over();
            }
            Err(failure) => {
                // The lock is released with `lock` (or kept as owner, who retries as after a
                // crash): the next check tries again.
                if self.incidents.new_start_failure(&failure) {
                    error!(%failure, "cannot start the embedded server after taking it over; trying again");
                }
                self.incidents.set_outage(Some(format!(
                    "the pgharness that ran the embedded server (pid {previous_owner}) stopped, \
                     and the server does not start here; pgharness's log says why"
                )));
            }
        }
    }

    async fn recover_if_crashed(&self) {
        // Busy: a stop, start or restart is under way, and the postmaster may be gone on purpose.
        let Ok(_guard) = self.control.try_lock() else {
            return;
        };
        if !self.running.load(Ordering::SeqCst) || self.postmaster_alive() {
            return;
        }
        let previous = self.outage();
        if previous.is_none() {
            // A crash leaves its reason at the end of the server log; a SIGKILL leaves nothing.
            let log_path = self.home.join("postgresql.log");
            let tail_offset = std::fs::metadata(&log_path)
                .map_or(0, |metadata| metadata.len().saturating_sub(4096));
            let log = read_from(&log_path, tail_offset);
            let last_lines: Vec<&str> = log.lines().rev().take(5).collect();
            error!(
                data = %self.home.display(),
                server_log_tail = %last_lines.into_iter().rev().collect::<Vec<_>>().join("\n"),
                "the embedded PostgreSQL server exited unexpectedly (killed, or out of memory?); restarting it on the same data"
            );
            self.incidents.crashed(
                "the embedded PostgreSQL server exited unexpectedly; restarting it".to_owned(),
            );
        }
        match self.start_on_same_port().await {
            Ok(()) => {
                info!(
                    port = self.port,
                    "the embedded PostgreSQL server is running again"
                );
                self.incidents.recovered();
            }
            Err(failure) => {
                // Tried again every check; logged once per cause, with its paths.
                if self.incidents.new_start_failure(&failure) {
                    error!(%failure, "cannot restart the embedded PostgreSQL server; trying again");
                }
                self.incidents.set_outage(Some(
                    "the embedded PostgreSQL server exited unexpectedly and does not start \
                     again; pgharness's log says why"
                        .to_owned(),
                ));
            }
        }
    }
}
