//! How many connections a server can hold open: on Unix the open-file limit (raised to the
//! hard limit first, as servers do); Windows has no such per-process limit for sockets.

/// The number of descriptors this process may have open, after raising the soft limit.
#[cfg(unix)]
pub fn raise_descriptor_limit() -> u64 {
    use tracing::{info, warn};
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            info!(limit, "open file limit");
            limit
        }
        Err(error) => {
            warn!(%error, "cannot read or raise the open file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    })
}

/// The number of sockets this process may have open: Windows sets no per-process limit worth
/// raising, so a generous fixed cap.
#[cfg(not(unix))]
#[must_use]
pub fn raise_descriptor_limit() -> u64 {
    16_384
}
