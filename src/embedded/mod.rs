//! The embedded PostgreSQL 16 server: one data directory, one server.
//!
//! Layout of a server home (`PGHARNESS_DATA_DIR`):
//! - `pgdata/`: the cluster (0700);
//! - `password`: the generated superuser password (0600);
//! - `server.json`: port and owner of the running server, written once it accepts connections;
//! - `harness.lock`: held (flock) by the process that owns the running server;
//! - `postgresql.log`: the server's log.
//!
//! The process holding the lock owns the server and stops it. Any other process finds the lock
//! taken and attaches to the running server instead of starting a second one. A server left
//! behind by a killed owner is stopped (reaped) by the next owner before it starts its own.
//!
//! Commands are built with postgresql_embedded's command builders (`postgresql_commands`) and
//! run through [`Privilege`], because postgresql_embedded's own `start()` cannot run as root and
//! always passes `-F` (fsync off), which is wrong for development data.

mod cluster;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use postgresql_commands::CommandBuilder;
use postgresql_commands::pg_ctl::{Mode, PgCtlBuilder, ShutdownMode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::binaries::Binaries;
use crate::config::DatabaseUrl;
use crate::platform::files;
pub use crate::platform::privilege::{Privilege, PrivilegeError, RootSettings};
use crate::platform::{process, random};

/// The superuser of the embedded server.
pub const SUPERUSER: &str = "postgres";
/// initdb and a start after crash recovery can take seconds on a loaded 2-core machine;
/// postgresql_embedded's default of 5 s is too tight.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an attaching process waits for the owner to report its server ready.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;
/// How often an owned server's postmaster is checked for an unexpected exit.
const SUPERVISION_INTERVAL: Duration = Duration::from_millis(250);
/// After a crash, the old server's backends may hold its shared memory for a moment, and
/// PostgreSQL refuses to start until they are gone: starts are retried this long.
const RESTART_PATIENCE: Duration = Duration::from_secs(15);

/// Why the embedded server cannot start, stop or be reached.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// PostgreSQL cannot be run as this user.
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
    /// A PostgreSQL command failed.
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

/// Why a PostgreSQL command (`initdb`, `pg_ctl`) failed.
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

/// How the server is to be run.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The server home (see the module documentation).
    pub home: PathBuf,
    /// `None`: a free port.
    pub port: Option<u16>,
    /// Created if missing.
    pub database: String,
    /// `false` turns off fsync, synchronous commit and full-page writes: for throwaway test
    /// clusters only.
    pub durable: bool,
    /// Extra `postgresql.conf` settings.
    pub configuration: BTreeMap<String, String>,
    /// How PostgreSQL runs when this process is root.
    pub root: RootSettings,
    /// The variable that chose `home`, named when it cannot be made or used.
    pub home_variable: Option<&'static str>,
}

impl ServerOptions {
    /// The application's server, as configured: durable (fsync on), its data kept.
    #[must_use]
    pub fn configured(settings: &crate::config::EmbeddedSettings) -> Self {
        Self {
            home: settings.data_dir.clone(),
            port: settings.port,
            database: settings.database.clone(),
            durable: true,
            configuration: settings.configuration.clone(),
            root: settings.root.clone(),
            home_variable: Some("PGHARNESS_DATA_DIR"),
        }
    }

    /// A throwaway server in `home` on a free port, with `database`: no fsync, for tests and
    /// scratch work.
    #[must_use]
    pub fn throwaway(home: impl Into<PathBuf>, database: &str) -> Self {
        Self {
            home: home.into(),
            port: None,
            database: database.to_owned(),
            durable: false,
            configuration: BTreeMap::new(),
            root: RootSettings::default(),
            home_variable: None,
        }
    }
}

/// Who stops the server.
#[derive(Debug)]
enum Role {
    Owner { lock: File },
    Attached { owner_pid: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
struct ServerState {
    port: u16,
    owner_pid: u32,
    /// Absent: the server listens on TCP only (as written by earlier versions).
    #[serde(default)]
    socket_dir: Option<PathBuf>,
}

/// The longest Unix-socket path every platform takes (`sun_path` is 104 bytes on macOS, 108 on
/// Linux, its terminating NUL included).
const SOCKET_PATH_MAX: usize = 103;

/// Where the server also listens on a Unix socket: its home, on Unix, when the socket's path
/// (`<home>/.s.PGSQL.<port>`) fits and `PGHARNESS_PG_CONF` does not choose socket directories
/// itself. Local connections through it cost the server and this process about a fifth less
/// CPU than TCP over loopback (README, Benchmarks).
fn socket_dir_for(options: &ServerOptions) -> Option<PathBuf> {
    let home = options.home.to_str()?;
    let fits = home.len() + "/.s.PGSQL.65535".len() <= SOCKET_PATH_MAX;
    // `unix_socket_directories` is a comma-separated list, quoted on pg_ctl's command line.
    let plain = !home.contains([',', '\'', '"', '\\']);
    (cfg!(unix)
        && fits
        && plain
        && !options
            .configuration
            .contains_key("unix_socket_directories"))
    .then(|| options.home.clone())
}

/// A running embedded server, owned by this process or attached to.
#[derive(Debug)]
pub struct EmbeddedServer {
    binaries: Binaries,
    privilege: Privilege,
    home: PathBuf,
    port: u16,
    /// The directory of its Unix socket, when it has one: this process connects through it.
    socket_dir: Option<PathBuf>,
    password: SecretString,
    database: String,
    role: Role,
    options: ServerOptions,
    /// Whether the server is meant to run: set by start and resume, cleared by pause and stop.
    running: AtomicBool,
    /// Why the server is down against its owner's will, while it is being restarted.
    outage: Mutex<Option<String>>,
    /// Unexpected exits seen, and restarts after them (for the events timeline).
    crashes: AtomicU64,
    recoveries: AtomicU64,
    /// Serialises stop, pause, resume and crash recovery.
    control: tokio::sync::Mutex<()>,
}

impl EmbeddedServer {
    /// Starts the server of `options.home`, or attaches to it when another process runs it.
    ///
    /// # Errors
    ///
    /// [`ServerError`] naming the cause: port in use, a damaged data directory, a failed
    /// initdb or start (with the server log's last lines), no way to run as non-root.
    pub async fn start(binaries: &Binaries, options: &ServerOptions) -> Result<Self, ServerError> {
        let privilege = Privilege::detect(&options.root)?;
        let home = &options.home;
        let home_error = |action, path: &Path, source| match options.home_variable {
            Some(variable) => ServerError::DataDir {
                action,
                path: path.to_owned(),
                variable,
                source,
            },
            None => io_error(action, path, source),
        };
        files::create_private_dir(home)
            .map_err(|source| home_error("cannot create", home, source))?;
        privilege.hand_over(home)?;
        let lock_path = home.join("harness.lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| home_error("cannot open", &lock_path, source))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Self::attach(binaries, privilege, options).await;
            }
            Err(std::fs::TryLockError::Error(source)) => {
                return Err(io_error("cannot lock", &lock_path, source));
            }
        }
        let state_path = home.join("server.json");
        let _ = std::fs::remove_file(&state_path);

        let pgdata = home.join("pgdata");
        cluster::reap_orphan(binaries, &privilege, &pgdata).await?;
        let password_path = home.join("password");
        let password = if pgdata.join("PG_VERSION").exists() {
            read_password(&password_path)
                .ok_or_else(|| ServerError::MissingPassword { path: home.clone() })?
        } else {
            let password = SecretString::from(
                random::alphanumeric(32)
                    .map_err(|source| io_error("cannot make a password for", &pgdata, source))?,
            );
            write_private(&password_path, password.expose_secret().as_bytes())?;
            cluster::create(binaries, &privilege, &pgdata, &password, options.durable).await?;
            password
        };

        let mut server = Self {
            binaries: binaries.clone(),
            privilege,
            home: home.clone(),
            port: 0,
            socket_dir: socket_dir_for(options),
            password,
            database: options.database.clone(),
            role: Role::Owner { lock },
            options: options.clone(),
            running: AtomicBool::new(false),
            outage: Mutex::new(None),
            crashes: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            control: tokio::sync::Mutex::new(()),
        };
        server.start_postgres(options).await?;
        let state = ServerState {
            port: server.port,
            owner_pid: std::process::id(),
            socket_dir: server.socket_dir.clone(),
        };
        let state_json = serde_json::to_vec(&state).unwrap_or_default();
        write_private(&state_path, &state_json)?;
        server.ensure_database().await?;
        Ok(server)
    }

    async fn attach(
        binaries: &Binaries,
        privilege: Privilege,
        options: &ServerOptions,
    ) -> Result<Self, ServerError> {
        let state_path = options.home.join("server.json");
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        let state = loop {
            if let Some(state) = std::fs::read(&state_path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<ServerState>(&bytes).ok())
            {
                break state;
            }
            if Instant::now() > deadline {
                return Err(ServerError::AttachTimeout {
                    owner: "unknown".to_owned(),
                    path: options.home.clone(),
                    seconds: ATTACH_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let password = read_password(&options.home.join("password")).ok_or_else(|| {
            ServerError::MissingPassword {
                path: options.home.clone(),
            }
        })?;
        info!(
            port = state.port,
            owner_pid = state.owner_pid,
            "attached to the embedded server run by another pgharness"
        );
        let server = Self {
            binaries: binaries.clone(),
            privilege,
            home: options.home.clone(),
            port: state.port,
            socket_dir: state.socket_dir,
            password,
            database: options.database.clone(),
            role: Role::Attached {
                owner_pid: state.owner_pid,
            },
            options: options.clone(),
            running: AtomicBool::new(true),
            outage: Mutex::new(None),
            crashes: AtomicU64::new(0),
            recoveries: AtomicU64::new(0),
            control: tokio::sync::Mutex::new(()),
        };
        server.ensure_database().await?;
        Ok(server)
    }

    async fn start_postgres(&mut self, options: &ServerOptions) -> Result<(), ServerError> {
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

    /// Creates the application database if it does not exist yet.
    async fn ensure_database(&self) -> Result<(), ServerError> {
        let database_error = |action: &str| {
            let action = action.to_owned();
            move |source| ServerError::Database { action, source }
        };
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect_with(
            &self.superuser_url("postgres").connect_options(),
        )
        .await
        .map_err(database_error("connecting to the embedded server"))?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&self.database)
                .fetch_one(&mut connection)
                .await
                .map_err(database_error("looking up the application database"))?;
        if !exists {
            let statement = format!("CREATE DATABASE \"{}\"", self.database.replace('"', "\"\""));
            match sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut connection)
                .await
            {
                Ok(_) => info!(database = %self.database, "created the application database"),
                // 42P04: another process created it at the same moment.
                Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42P04") => {}
                Err(error) => {
                    return Err(database_error("creating the application database")(error));
                }
            }
        }
        sqlx::Connection::close(connection).await.ok();
        let mut connection =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&self.url().connect_options())
                .await
                .map_err(database_error("connecting to the application database"))?;
        if let Err(error) = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&mut connection)
            .await
        {
            // Only the connection screen's slow-query table depends on it.
            warn!(%error, "pg_stat_statements is unavailable");
        }
        sqlx::Connection::close(connection).await.ok();
        Ok(())
    }

    /// The superuser URL of a database on this server.
    #[must_use]
    pub fn superuser_url(&self, database: &str) -> DatabaseUrl {
        let url = DatabaseUrl::local(self.port, SUPERUSER, self.password.clone(), database);
        match &self.socket_dir {
            Some(directory) => url.through_socket(directory.clone()),
            None => url,
        }
    }

    /// The URL of the application database.
    #[must_use]
    pub fn url(&self) -> DatabaseUrl {
        self.superuser_url(&self.database)
    }

    /// The port the server listens on (127.0.0.1).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the Unix socket it also listens on, which its URLs connect through.
    #[must_use]
    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket_dir.as_deref()
    }

    /// The cluster's directory (`<home>/pgdata`).
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.home.join("pgdata")
    }

    /// `Some(pid)` when another process owns the server this one attached to.
    #[must_use]
    pub fn owner_pid(&self) -> Option<u32> {
        match self.role {
            Role::Owner { .. } => None,
            Role::Attached { owner_pid } => Some(owner_pid),
        }
    }

    /// Whether the server is up: meant to run, and its postmaster alive.
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst) && self.postmaster_alive()
    }

    fn postmaster_alive(&self) -> bool {
        process::postmaster_pid(&self.data_dir()).is_some_and(process::is_postgres)
    }

    /// Why the server is down while it should run, until it has been restarted.
    #[must_use]
    pub fn outage(&self) -> Option<String> {
        self.outage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the server exited unexpectedly, and how many times it was started again
    /// after that, since this handle was made.
    #[must_use]
    pub fn crashes_and_recoveries(&self) -> (u64, u64) {
        (
            self.crashes.load(Ordering::SeqCst),
            self.recoveries.load(Ordering::SeqCst),
        )
    }

    fn set_outage(&self, cause: Option<String>) {
        *self.outage.lock().unwrap_or_else(PoisonError::into_inner) = cause;
    }

    /// Watches an owned server until it is dropped: if its postmaster exits unexpectedly
    /// (killed, out of memory), logs it and starts it again on the same data and port.
    pub fn supervise(self: &Arc<Self>) {
        if self.owner_pid().is_some() {
            return;
        }
        let server = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SUPERVISION_INTERVAL).await;
                let Some(server) = Weak::upgrade(&server) else {
                    return;
                };
                server.recover_if_crashed().await;
            }
        });
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
            self.crashes.fetch_add(1, Ordering::SeqCst);
            self.set_outage(Some(format!(
                "the embedded PostgreSQL server (data {}) exited unexpectedly; restarting it",
                self.home.display()
            )));
        }
        match self.start_on_same_port().await {
            Ok(()) => {
                info!(
                    port = self.port,
                    "the embedded PostgreSQL server is running again"
                );
                self.recoveries.fetch_add(1, Ordering::SeqCst);
                self.set_outage(None);
            }
            Err(failure) => {
                let outage = format!(
                    "the embedded PostgreSQL server exited unexpectedly and does not start again: {failure}"
                );
                // Tried again every check; said once per cause.
                if previous.as_deref() != Some(outage.as_str()) {
                    error!(%failure, "cannot restart the embedded PostgreSQL server; trying again");
                }
                self.set_outage(Some(outage));
            }
        }
    }

    /// Starts the server on its port, waiting out a crashed server's leftovers.
    async fn start_on_same_port(&self) -> Result<(), ServerError> {
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

    /// Stops the server for good (fast shutdown: clients are disconnected, committed data is
    /// kept). An attached process leaves the server to its owner.
    ///
    /// # Errors
    ///
    /// [`ServerError::Command`] when `pg_ctl stop` fails.
    pub async fn stop(&self) -> Result<(), ServerError> {
        if self.owner_pid().is_some() {
            self.running.store(false, Ordering::SeqCst);
            return Ok(());
        }
        self.pause().await?;
        let _ = std::fs::remove_file(self.home.join("server.json"));
        // The data directory is free for the next owner from now on, even while this value lives.
        if let Role::Owner { lock } = &self.role {
            let _ = lock.unlock();
        }
        Ok(())
    }

    /// Stops the server but keeps ownership, so that [`EmbeddedServer::resume`] can start it
    /// again on the same port: an outage rehearsal.
    ///
    /// # Errors
    ///
    /// [`ServerError::NotOwner`] when attached; [`ServerError::Command`] when `pg_ctl` fails.
    pub async fn pause(&self) -> Result<(), ServerError> {
        if let Some(owner) = self.owner_pid() {
            return Err(ServerError::NotOwner { owner });
        }
        let _guard = self.control.lock().await;
        if !self.running.load(Ordering::SeqCst) {
            return Ok(());
        }
        if !self.postmaster_alive() {
            // It died on its own: stopped already.
            self.running.store(false, Ordering::SeqCst);
            self.set_outage(None);
            return Ok(());
        }
        run(&self.privilege, self.stop_builder(), "pg_ctl stop").await?;
        self.running.store(false, Ordering::SeqCst);
        info!(data = %self.home.display(), "embedded PostgreSQL stopped");
        Ok(())
    }

    /// Starts a paused server again, on the same port.
    ///
    /// # Errors
    ///
    /// [`ServerError::NotOwner`] when attached; [`ServerError::PortInUse`] when its port was
    /// taken meanwhile; [`ServerError::Command`] when `pg_ctl` fails.
    pub async fn resume(&self) -> Result<(), ServerError> {
        if let Some(owner) = self.owner_pid() {
            return Err(ServerError::NotOwner { owner });
        }
        let _guard = self.control.lock().await;
        if self.running.load(Ordering::SeqCst) && self.postmaster_alive() {
            return Ok(());
        }
        self.start_on_same_port().await?;
        self.running.store(true, Ordering::SeqCst);
        self.set_outage(None);
        Ok(())
    }

    /// Leaves the server running beyond this value and frees the data directory's lock: for a
    /// server shared by several processes, stopped by whoever tracks its users.
    pub fn detach(self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// The command that stops this server, wrapped as this process's privilege needs.
    #[must_use]
    pub fn stop_command(&self) -> std::process::Command {
        let builder = self.stop_builder();
        self.privilege.command(
            &builder.get_program_file(),
            &builder.get_args(),
            &builder.get_envs(),
        )
    }

    fn stop_builder(&self) -> PgCtlBuilder {
        stop_builder(&self.binaries, &self.home.join("pgdata"))
    }
}

impl Drop for EmbeddedServer {
    /// A server must not outlive its owner: stop it even when `stop` was not awaited
    /// (a panic, an early return).
    fn drop(&mut self) {
        if self.running.load(Ordering::SeqCst) && self.owner_pid().is_none() {
            let _ = self.stop_command().output();
            let _ = std::fs::remove_file(self.home.join("server.json"));
        }
    }
}

fn stop_builder(binaries: &Binaries, pgdata: &Path) -> PgCtlBuilder {
    PgCtlBuilder::new()
        .program_dir(binaries.bin_dir())
        .mode(Mode::Stop)
        .pgdata(pgdata)
        .shutdown_mode(ShutdownMode::Fast)
        .wait()
        .timeout(COMMAND_TIMEOUT.as_secs())
}

/// Runs a PostgreSQL command through `privilege`, with a timeout; the error holds its output.
async fn run(
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

fn read_password(path: &Path) -> Option<SecretString> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .map(SecretString::from)
}

fn read_from(path: &Path, offset: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> ServerError {
    ServerError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Writes a file readable by its owner only, replacing it atomically.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), ServerError> {
    files::write_private(path, contents).map_err(|source| io_error("cannot write", path, source))
}
