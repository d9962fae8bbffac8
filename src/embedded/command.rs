//! Running `PostgreSQL`'s commands: `pg_ctl start` on a port (a free one, or the same one after an
//! outage) and `pg_ctl stop`, through [`Privilege`] and with a timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use postgresql_commands::CommandBuilder;
use postgresql_commands::pg_ctl::{Mode, PgCtlBuilder, ShutdownMode};
use tracing::{debug, info, warn};

use super::{
    CommandError, EmbeddedServer, Privilege, ServerError, ServerOptions, cluster, io_error,
};
use crate::binaries::Binaries;

/// initdb and a start after crash recovery can take seconds on a loaded 2-core machine;
/// `postgresql_embedded`'s default of 5 s is too tight.
const COMMAND_TIMEOUT: Duration = Duration::from_mins(2);
const PORT_ATTEMPTS: usize = 5;
/// After a crash, the old server's backends may hold its shared memory for a moment, and
/// `PostgreSQL` refuses to start until they are gone: starts are retried this long.
const RESTART_PATIENCE: Duration = Duration::from_secs(15);

impl EmbeddedServer {
    pub(super) async fn start_postgres(
        &mut self,
        options: &ServerOptions,
    ) -> Result<(), ServerError> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match options.port {
                Some(port) => port,
                None => free_port()?,
            };
            match self.pg_ctl_start(port, options).await {
                Ok(()) => {
                    self.port = port;
                    self.running.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                // A free port can be taken between choosing and binding it: choose again.
                Err(ServerError::PortInUse { .. }) if options.port.is_none() => {
                    warn!(
                        port,
                        "port was taken before the server bound it; trying another"
                    );
                    last_error = Some(ServerError::PortInUse { port });
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(ServerError::PortInUse { port: 0 }))
    }

    async fn pg_ctl_start(&self, port: u16, options: &ServerOptions) -> Result<(), ServerError> {
        let log_path = self.home.join("postgresql.log");
        let log_offset = std::fs::metadata(&log_path).map_or(0, |metadata| metadata.len());
        let mut settings = BTreeMap::from([
            ("listen_addresses".to_owned(), "127.0.0.1".to_owned()),
            (
                "unix_socket_directories".to_owned(),
                self.socket_dir
                    .as_ref()
                    .map_or_else(String::new, |directory| directory.display().to_string()),
            ),
            // For the connection screen's slowest statements.
            (
                "shared_preload_libraries".to_owned(),
                "pg_stat_statements".to_owned(),
            ),
        ]);
        if !options.durable {
            for key in ["fsync", "synchronous_commit", "full_page_writes"] {
                settings.insert(key.to_owned(), "off".to_owned());
            }
        }
        settings.extend(options.configuration.clone());
        let mut server_options = vec![format!("-p {port}")];
        server_options.extend(
            settings
                .iter()
                .map(|(key, value)| format!("-c {key}='{}'", value.replace('\'', "''"))),
        );
        let start = Instant::now();
        let builder = PgCtlBuilder::new()
            .program_dir(self.binaries.bin_dir())
            .env("PGDATABASE", "")
            .mode(Mode::Start)
            .pgdata(self.home.join("pgdata"))
            .log(&log_path)
            .options(&server_options)
            .wait()
            .timeout(COMMAND_TIMEOUT.as_secs());
        if let Err(error) = run(&self.privilege, builder, "pg_ctl start").await {
            let new_log = read_from(&log_path, log_offset);
            if new_log.contains("Address already in use") {
                return Err(ServerError::PortInUse { port });
            }
            return Err(match error {
                ServerError::Command {
                    command, source, ..
                } => ServerError::Command {
                    command,
                    source,
                    server_log: Some(format!("server log ({}):\n{new_log}", log_path.display())),
                },
                other => other,
            });
        }
        info!(port, elapsed_ms = start.elapsed().as_millis(), data = %self.home.display(), "embedded PostgreSQL started");
        Ok(())
    }

    /// Starts the server on its port, waiting out a crashed server's leftovers.
    pub(super) async fn start_on_same_port(&self) -> Result<(), ServerError> {
        let deadline = Instant::now() + RESTART_PATIENCE;
        loop {
            cluster::reap_orphan(&self.binaries, &self.privilege, &self.data_dir()).await?;
            match self.pg_ctl_start(self.port, &self.options).await {
                Err(ServerError::Command { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                result => return result,
            }
        }
    }

    /// The command that stops this server, run as this process's privilege needs.
    #[must_use]
    pub fn stop_command(&self) -> std::process::Command {
        let (program, args) = self.stop_program();
        self.privilege
            .command(&program, &args, &self.stop_builder().get_envs())
    }

    /// The program and arguments that stop this server, for a process that runs them later
    /// as [`EmbeddedServer::privilege`] says (the test server's watchdog).
    #[must_use]
    pub fn stop_program(&self) -> (PathBuf, Vec<std::ffi::OsString>) {
        let builder = self.stop_builder();
        (builder.get_program_file(), builder.get_args())
    }

    pub(super) fn stop_builder(&self) -> PgCtlBuilder {
        stop_builder(&self.binaries, &self.home.join("pgdata"))
    }
}

pub(super) fn stop_builder(binaries: &Binaries, pgdata: &Path) -> PgCtlBuilder {
    PgCtlBuilder::new()
        .program_dir(binaries.bin_dir())
        .mode(Mode::Stop)
        .pgdata(pgdata)
        .shutdown_mode(ShutdownMode::Fast)
        .wait()
        .timeout(COMMAND_TIMEOUT.as_secs())
}

/// Runs a `PostgreSQL` command through `privilege`, with a timeout; the error holds its output.
pub(super) async fn run(
    privilege: &Privilege,
    builder: impl CommandBuilder,
    name: &'static str,
) -> Result<String, ServerError> {
    let program = builder.get_program_file();
    let mut command = tokio::process::Command::from(privilege.command(
        &program,
        &builder.get_args(),
        &builder.get_envs(),
    ));
    command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    debug!(?command, "running");
    let failed = |source| ServerError::Command {
        command: name,
        source,
        server_log: None,
    };
    let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
        .await
        .map_err(|_| failed(CommandError::TimedOut(COMMAND_TIMEOUT.as_secs())))?
        .map_err(|source| {
            failed(CommandError::CannotRun {
                program: program.clone(),
                source,
            })
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(failed(CommandError::Failed {
            program,
            status: output.status,
            output: format!(
                "{}{}",
                stdout.trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }))
    }
}

fn free_port() -> Result<u16, ServerError> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| io_error("cannot find a free port on", Path::new("127.0.0.1"), source))?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|source| io_error("cannot find a free port on", Path::new("127.0.0.1"), source))
}

pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}
