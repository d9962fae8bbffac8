//! Processes: whether the server's postmaster (from its `postmaster.pid`) or a test process is
//! alive, and starting one that outlives its parent. Linux reads `/proc`; macOS and Windows ask
//! the process table (sysinfo). Stopping the server is always `pg_ctl stop`, on every system.

use std::path::Path;
use std::process::{Command, Stdio};

/// The command that runs npm: on Windows a `.cmd` script, which is not found by the bare name.
pub const NPM: &str = if cfg!(windows) { "npm.cmd" } else { "npm" };

/// The postmaster's pid, while `pgdata/postmaster.pid` exists.
#[must_use]
pub fn postmaster_pid(pgdata: &Path) -> Option<u32> {
    std::fs::read_to_string(pgdata.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is a running `postgres` process. A zombie (dead, not yet reaped by its parent,
/// as happens under a container's init) does not count.
#[cfg(target_os = "linux")]
#[must_use]
pub fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let Some((name, rest)) = stat
            .split_once(" (")
            .and_then(|(_, rest)| rest.rsplit_once(')'))
        else {
            return false;
        };
        name == "postgres" && !rest.trim_start().starts_with('Z')
    })
}

/// Whether `pid` is a running `postgres` process (macOS and Windows: from the process table).
#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn is_postgres(pid: u32) -> bool {
    process_name(pid).is_some_and(|name| {
        name.to_string_lossy()
            .trim_end_matches(std::env::consts::EXE_SUFFIX)
            .eq_ignore_ascii_case("postgres")
    })
}

/// Whether process `pid` is running (zombies do not count).
#[cfg(target_os = "linux")]
#[must_use]
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Whether process `pid` is running.
#[cfg(not(target_os = "linux"))]
#[must_use]
pub fn is_alive(pid: u32) -> bool {
    process_name(pid).is_some()
}

#[cfg(not(target_os = "linux"))]
fn process_name(pid: u32) -> Option<std::ffi::OsString> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System};
    let pid = Pid::from_u32(pid);
    let mut system = System::new();
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    system
        .process(pid)
        .filter(|process| process.status() != ProcessStatus::Zombie)
        .map(|process| process.name().to_owned())
}

/// Starts `command` so that it outlives this process and is not stopped with it: not in this
/// process's group (Ctrl-C in a terminal signals the whole group), and on Windows without a
/// console of its own.
///
/// # Errors
///
/// The I/O error of starting it.
pub fn spawn_detached(command: &mut Command) -> std::io::Result<()> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        command.process_group(0);
    }
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt as _;
        const DETACHED_PROCESS: u32 = 0x0000_0008;
        const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
        command.creation_flags(DETACHED_PROCESS | CREATE_NEW_PROCESS_GROUP);
    }
    command.spawn().map(|_| ())
}

/// The path of this executable for a process that outlives this one: itself on Unix; on
/// Windows a copy in `dir`, because a running `.exe` cannot be replaced and `cargo` rebuilds
/// test binaries in place.
///
/// # Errors
///
/// The I/O error of finding the executable or of copying it.
pub fn detachable_current_exe(dir: &Path) -> std::io::Result<std::path::PathBuf> {
    let executable = std::env::current_exe()?;
    #[cfg(windows)]
    {
        // Copies of earlier runs that are still running cannot be removed: they are skipped.
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("detached-") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let copy = dir.join(format!("detached-{}.exe", std::process::id()));
        std::fs::copy(&executable, &copy)?;
        Ok(copy)
    }
    #[cfg(not(windows))]
    {
        let _ = dir;
        Ok(executable)
    }
}
