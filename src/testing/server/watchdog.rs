//! The idle watchdog of the shared test server: a detached process that stops the server once
//! no test process has held `users.lock` for the idle timeout (`PGHARNESS_TEST_IDLE_SECONDS`).
//!
//! It has to outlive the test process that started the server, and the only executable a crate
//! using `pgharness::testing` is sure to have is its test binary. So the watchdog is a copy of
//! that binary started with [`WATCHDOG_DIR`] in its environment: a constructor (`ctor`) runs
//! before libtest's `main`, sees the variable, watches, and exits without running any test.
//! Plain Rust and std's file locks: the same on Linux, macOS and Windows.

use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::platform::privilege::Privilege;
use crate::platform::process;

/// The run directory to watch; set only in the watchdog's environment.
const WATCHDOG_DIR: &str = "PGHARNESS_TEST_WATCHDOG_DIR";
/// The command that stops the server ([`Stop`]), as JSON.
const WATCHDOG_STOP: &str = "PGHARNESS_TEST_WATCHDOG_STOP";
/// Seconds without a user before the server is stopped.
const WATCHDOG_IDLE: &str = "PGHARNESS_TEST_WATCHDOG_IDLE";

/// What stops the server: a program, its arguments, and who runs it (as root, the server's
/// unprivileged account: `pg_ctl` refuses root).
#[derive(Serialize, Deserialize)]
struct Stop {
    program: PathBuf,
    args: Vec<OsString>,
    privilege: Privilege,
}

/// Starts the watchdog of the server in `dir`, which `program` with `args` stops, run as
/// `privilege` says.
///
/// # Errors
///
/// The I/O error of starting it.
pub(super) fn spawn(
    dir: &Path,
    (program, args): &(PathBuf, Vec<OsString>),
    privilege: &Privilege,
    idle_seconds: u64,
) -> std::io::Result<()> {
    let stop = Stop {
        program: program.clone(),
        args: args.clone(),
        privilege: privilege.clone(),
    };
    let mut command = std::process::Command::new(process::detachable_current_exe(dir)?);
    command
        .current_dir(dir)
        .env(WATCHDOG_DIR, dir)
        .env(WATCHDOG_STOP, serde_json::to_string(&stop)?)
        .env(WATCHDOG_IDLE, idle_seconds.to_string());
    process::spawn_detached(&mut command)
}

/// Runs before `main` in every executable that links this code; does nothing unless this
/// process was started as a watchdog.
#[ctor::ctor(unsafe)]
fn watch_if_started_as_watchdog() {
    let Some(dir) = std::env::var_os(WATCHDOG_DIR) else {
        return;
    };
    let stop = std::env::var(WATCHDOG_STOP)
        .ok()
        .and_then(|json| serde_json::from_str::<Stop>(&json).ok());
    let idle_seconds = std::env::var(WATCHDOG_IDLE)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10);
    watch(Path::new(&dir), stop.as_ref(), idle_seconds);
    std::process::exit(0);
}

fn watch(dir: &Path, stop: Option<&Stop>, idle_seconds: u64) {
    let state = dir.join("state.json");
    let users = dir.join("users.lock");
    loop {
        let mut idle = 0;
        while idle < idle_seconds {
            std::thread::sleep(Duration::from_secs(1));
            if !state.exists() {
                // Another watchdog stopped the server, or a later one owns it.
                return;
            }
            idle = if nobody_holds(&users) {
                (idle + 1).min(seconds_since_an_attach(&users))
            } else {
                0
            };
        }
        // Under the start lock, so that no test process attaches while the server stops.
        let Ok(start_lock) = open(&dir.join("start.lock")) else {
            return;
        };
        if start_lock.lock().is_err() {
            return;
        }
        if nobody_holds(&users) {
            let _ = std::fs::remove_file(&state);
            if let Some(stop) = stop {
                let _ = stop
                    .privilege
                    .command(&stop.program, &stop.args, &[])
                    .env_remove(WATCHDOG_DIR)
                    .output();
            }
            return;
        }
        // A test process arrived meanwhile: watch again.
        let _ = start_lock.unlock();
    }
}

/// Seconds since a test process last attached (each marks `users.lock` as it does).
fn seconds_since_an_attach(users: &Path) -> u64 {
    std::fs::metadata(users)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .map_or(u64::MAX, |since| since.as_secs())
}

/// Whether no process holds a (shared) lock on `path`.
fn nobody_holds(path: &Path) -> bool {
    open(path).is_ok_and(|file| match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            true
        }
        Err(TryLockError::WouldBlock | TryLockError::Error(_)) => false,
    })
}

fn open(path: &Path) -> std::io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}
