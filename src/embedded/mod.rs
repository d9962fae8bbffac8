//! The embedded `PostgreSQL` 16 server: one data directory, one server.
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
//! Commands are built with `postgresql_embedded`'s command builders (`postgresql_commands`) and
//! run through [`Privilege`], because `postgresql_embedded`'s own `start()` cannot run as root and
//! always passes `-F` (fsync off), which is wrong for development data.

mod cluster;
mod command;
mod error;
mod ownership;
mod root_data_dir;
mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use secrecy::{ExposeSecret, SecretString};
use tracing::{info, warn};

use self::command::run;
pub use self::error::{CommandError, ServerError};
use self::ownership::{Claim, Role};
pub use self::root_data_dir::adopt_data_dir_from_roots_home;
use self::supervisor::Incidents;

use crate::binaries::Binaries;
use crate::config::DatabaseUrl;
use crate::platform::files;
pub use crate::platform::privilege::{Privilege, PrivilegeError, RootSettings};
use crate::platform::{process, random};

/// The superuser of the embedded server.
pub const SUPERUSER: &str = "postgres";

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
    /// How `PostgreSQL` runs when this process is root.
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

/// The longest Unix-socket path every platform takes (`sun_path` is 104 bytes on macOS, 108 on
/// Linux, its terminating NUL included).
const SOCKET_PATH_MAX: usize = 103;

/// Where the server also listens on a Unix socket: its home, on Unix, when the socket's path
/// (`<home>/.s.PGSQL.<port>`) fits and `PGHARNESS_PG_CONF` does not choose socket directories
/// itself. Local connections through it cost the server and this process about a fifth less
/// CPU than TCP over loopback (`cargo bench --bench api`).
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
    /// Owner or attached; an attached process becomes the owner when the owner stops.
    role: Mutex<Role>,
    options: ServerOptions,
    /// Whether the server is meant to run: set by start and resume, cleared by pause and stop.
    running: AtomicBool,
    /// Outages, crashes, recoveries and takeovers, for /health and the events timeline.
    incidents: Incidents,
    /// Serialises stop, pause, resume, crash recovery and takeover.
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
        privilege.ensure_reachable(
            &binaries.bin_dir().join("postgres"),
            "PGHARNESS_CACHE_DIR (or PGHARNESS_PG_BIN_DIR)",
            crate::config::ROOT_CACHE_DIR,
        )?;
        privilege.ensure_reachable(home, "PGHARNESS_DATA_DIR", crate::config::ROOT_DATA_DIR)?;
        files::create_private_dir(home).map_err(|source| match options.home_variable {
            Some(variable) => ServerError::DataDir {
                action: "cannot create",
                path: home.clone(),
                variable,
                source,
            },
            None => io_error("cannot create", home, source),
        })?;
        // The home, the cluster and its log are the server's; the password and the lock stay
        // this process's. A cluster made by root is handed over here, its data kept.
        privilege.hand_over_one(home)?;
        for server_files in [home.join("pgdata"), home.join("postgresql.log")] {
            if server_files.exists() {
                privilege.hand_over(&server_files)?;
            }
        }
        let lock = match Self::claim(binaries, &privilege, options).await? {
            Claim::Owner(lock) => lock,
            Claim::Attached(server) => return Ok(*server),
        };
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
            role: Mutex::new(Role::Owner { lock }),
            options: options.clone(),
            running: AtomicBool::new(false),
            incidents: Incidents::default(),
            control: tokio::sync::Mutex::new(()),
        };
        server.start_postgres(options).await?;
        server.write_state()?;
        server.ensure_database().await?;
        Ok(server)
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
        match *self.role.lock().unwrap_or_else(PoisonError::into_inner) {
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
        if let Role::Owner { lock } = &*self.role.lock().unwrap_or_else(PoisonError::into_inner) {
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
            self.incidents.set_outage(None);
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
        self.incidents.set_outage(None);
        Ok(())
    }

    /// Leaves the server running beyond this value and frees the data directory's lock: for a
    /// server shared by several processes, stopped by whoever tracks its users.
    pub fn detach(self) {
        self.running.store(false, Ordering::SeqCst);
    }

    /// How `PostgreSQL`'s commands run here (as root: as which account).
    #[must_use]
    pub fn privilege(&self) -> &Privilege {
        &self.privilege
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

fn read_password(path: &Path) -> Option<SecretString> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty())
        .map(SecretString::from)
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
