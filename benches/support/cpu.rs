//! CPU time from Linux's `/proc`, for the benchmarks (each includes this file with `#[path]`).

use std::time::Duration;

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces); empty if
/// the process is gone.
fn stat_fields(pid: u32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .map(|field| field.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// Clock ticks (`USER_HZ`: 100 per second on Linux) as time.
fn ticks(count: u64) -> Duration {
    Duration::from_millis(count * 10)
}

/// User plus system CPU time of process `pid`.
pub fn own(pid: u32) -> Duration {
    let fields = stat_fields(pid);
    // utime and stime are fields 14 and 15 of the whole line.
    ticks(fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0))
}

/// The same, plus that of the children `pid` has waited for (ended processes: a test's
/// backends, a child process that ran).
pub fn with_ended_children(pid: u32) -> Duration {
    let fields = stat_fields(pid);
    ticks(fields.get(11..15).map_or(0, |times| times.iter().sum()))
}

/// The processes the postmaster `postmaster` started that are running now: its backends and
/// background workers.
pub fn postgres_children(postmaster: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter(|&pid| stat_fields(pid).get(1) == Some(&u64::from(postmaster)))
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of the postmaster `postmaster` and every process it started, running or ended.
pub fn postgres(postmaster: u32) -> Duration {
    let running: Duration = postgres_children(postmaster).into_iter().map(own).sum();
    running + with_ended_children(postmaster)
}
