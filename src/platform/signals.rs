//! What asks a running server to shut down: Ctrl-C everywhere; on Unix also SIGTERM (service
//! managers, containers, `kill`); on Windows also Ctrl-Break and closing the console.

/// A future that resolves when the process is asked to shut down.
///
/// # Errors
///
/// The I/O error when the signal handlers cannot be installed.
pub fn shutdown_requested() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        })
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
        let mut interrupt = ctrl_c()?;
        let mut interrupt_break = ctrl_break()?;
        let mut close = ctrl_close()?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = interrupt_break.recv() => {},
                _ = close.recv() => {},
            }
        })
    }
}
