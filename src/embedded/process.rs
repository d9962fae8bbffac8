//! Whether the server's postmaster is alive, from its `postmaster.pid`: the one place that asks
//! the operating system about a process.

use std::path::Path;

/// The postmaster's pid, while `pgdata/postmaster.pid` exists.
pub(crate) fn postmaster_pid(pgdata: &Path) -> Option<u32> {
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
pub(crate) fn is_postgres(pid: u32) -> bool {
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

/// Whether `pid` is running (other Unix systems have no `/proc` to tell its name).
#[cfg(all(unix, not(target_os = "linux")))]
pub(crate) fn is_postgres(pid: u32) -> bool {
    is_alive(pid)
}

/// Whether process `pid` is running (zombies do not count).
#[cfg(target_os = "linux")]
pub(crate) fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Whether process `pid` is running.
#[cfg(all(unix, not(target_os = "linux")))]
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(error) => error == nix::errno::Errno::EPERM,
    }
}
