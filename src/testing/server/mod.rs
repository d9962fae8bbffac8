//! The one embedded `PostgreSQL` 16 server a whole test run shares, and its upkeep: what
//! `pgharness::testing` hands databases out of, and what `pgharness testdb` inspects.
//!
//! In the run directory (`PGHARNESS_TEST_DIR`, default `pgharness-test-<uid>` in `/dev/shm` when it
//! has room, else in the temp directory):
//! - `start.lock`: shared while test processes attach to the server, exclusive while one starts
//!   it and while the watchdog stops it;
//! - `users.lock`: every test process holds a shared lock on it until it exits (the kernel
//!   releases it even after SIGKILL);
//! - `state.json`: the running server's port and password;
//! - `pgpass`: the same password for `psql` (0600), named by the URLs of kept databases;
//! - `server/`: the server's home, tuned for tests (fsync off);
//! - a watchdog (`watchdog.rs`), a detached process that stops the server once
//!   no process has held `users.lock` for the idle timeout (`PGHARNESS_TEST_IDLE_SECONDS`,
//!   default 10).
//!
//! Databases on it: `pgh_t_<pid>_<n>` per test (dropped once their process is gone, unless
//! kept), `pgh_tpl_<key>` templates per migration set (the newest few per crate are kept),
//! `pgh_tpl_<key>_building` while one is built.

mod housekeeping;
mod settings;
mod watchdog;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, PgConnection};
use tracing::info;

pub use self::housekeeping::{KeptDatabase, drop_database, keep, kept_databases, tidy};
#[cfg(feature = "testing")]
pub(crate) use self::housekeeping::{drop_on, mark_template_used, template_lock};
pub use self::settings::{KeepPolicy, TestSettings};
use crate::binaries;
use crate::config::{Config, ConfigError, DatabaseUrl};
use crate::database::sql;
use crate::embedded::{EmbeddedServer, SUPERUSER, ServerError, ServerOptions};
use crate::platform::process;

/// Test databases are named `<prefix><pid>_<n>`.
pub const TEST_DATABASE_PREFIX: &str = "pgh_t_";
/// Templates are named `<prefix><key>`.
pub const TEMPLATE_PREFIX: &str = "pgh_tpl_";

/// Why the shared test server cannot be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum TestServerError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No `PostgreSQL` binaries.
    #[error(transparent)]
    Binaries(#[from] binaries::BinariesError),
    /// The server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A statement failed.
    #[error("the shared test server: {0}")]
    Database(#[from] sqlx::Error),
    /// No server runs in the run directory that a running pool was expected to hold.
    #[error(
        "no shared test server runs in {dir}, where the pool at PGHARNESS_TEST_POOL_URL was \
         expected to hold one: run the tests with the PGHARNESS_TEST_DIR of that `pgharness \
         testdb serve` (`pgharness testdb run -- …` passes it on), or unset PGHARNESS_TEST_POOL_URL"
    )]
    NotRunning {
        /// The run directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    port: u16,
    password: String,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TestServerError {
    let path = path.to_owned();
    move |source| TestServerError::Io {
        action,
        path,
        source,
    }
}

/// A test process's hold on the shared server.
#[derive(Debug)]
pub struct Attached {
    /// The superuser URL, database `postgres`.
    pub admin: DatabaseUrl,
    /// A connection on it (the one that found the server alive).
    pub connection: PgConnection,
}

/// The shared server, started if needed, or the server named by `TEST_DATABASE_URL`.
///
/// Test processes attach under a shared lock on `start.lock`, all at once (under nextest, many
/// start together); starting the server, and the watchdog's stopping it, take it exclusively.
///
/// # Errors
///
/// [`TestServerError`] when the server cannot be started or reached.
pub async fn attach() -> Result<Attached, TestServerError> {
    let settings = TestSettings::load()?;
    if let Some(url) = &settings.server_url {
        let admin = DatabaseUrl::parse(url)?.with_database("postgres");
        let connection = PgConnection::connect_with(&admin.connect_options()).await?;
        return Ok(Attached { admin, connection });
    }
    let dir = &settings.run_dir;
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    // Held first: a watchdog that sees it does not stop the server.
    hold_user_lock(dir)?;
    let shared = lock_start(dir, Hold::Shared).await?;
    let running = running_server(dir).await;
    let _ = shared.unlock();
    if let Some(attached) = running {
        ensure_extensions().await?;
        return Ok(attached);
    }
    let exclusive = lock_start(dir, Hold::Exclusive).await?;
    let attached = match running_server(dir).await {
        Some(attached) => ensure_extensions().await.map(|()| attached),
        None => start_and_connect(dir).await,
    };
    let _ = exclusive.unlock();
    attached
}

/// The superuser URL of the shared server that another process keeps running (the pool of a
/// `pgharness testdb serve`), read from the run directory without connecting: a process that
/// takes its database from that pool needs no connection of its own to find it. The process
/// holds `users.lock` like any other.
///
/// # Errors
///
/// [`TestServerError::NotRunning`] when the run directory names no server.
pub fn attach_running() -> Result<DatabaseUrl, TestServerError> {
    let settings = TestSettings::load()?;
    if let Some(url) = &settings.server_url {
        return Ok(DatabaseUrl::parse(url)?.with_database("postgres"));
    }
    let dir = &settings.run_dir;
    std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
    hold_user_lock(dir)?;
    read_state(dir).ok_or_else(|| TestServerError::NotRunning { dir: dir.clone() })
}

/// How `start.lock` is held.
#[derive(Clone, Copy)]
enum Hold {
    /// By processes attaching to a running server, all at once.
    Shared,
    /// By the one starting the server, or the watchdog stopping it.
    Exclusive,
}

/// `start.lock`, held as asked (waited for off the runtime's threads).
async fn lock_start(dir: &Path, hold: Hold) -> Result<File, TestServerError> {
    let path = dir.join("start.lock");
    let file = open_lock(&path)?;
    tokio::task::spawn_blocking(move || {
        match hold {
            Hold::Shared => file.lock_shared(),
            Hold::Exclusive => file.lock(),
        }
        .map(|()| file)
    })
    .await
    .map_err(|error| TestServerError::Io {
        action: "cannot lock",
        path: path.clone(),
        source: std::io::Error::other(error),
    })?
    .map_err(io("cannot lock", &path))
}

/// The superuser URL `state.json` (in the run directory `dir`) names: through the server's Unix
/// socket when it has one, as the process that started it connects (a connection costs a
/// fifth less than over loopback TCP, and its worst case far less: `cargo bench --bench
/// testing`).
fn read_state(dir: &Path) -> Option<DatabaseUrl> {
    let state: State = serde_json::from_slice(&std::fs::read(dir.join("state.json")).ok()?).ok()?;
    let url = DatabaseUrl::local(
        state.port,
        SUPERUSER,
        SecretString::from(state.password),
        "postgres",
    );
    let home = dir.join("server");
    Some(if home.join(format!(".s.PGSQL.{}", state.port)).exists() {
        url.through_socket(home)
    } else {
        url
    })
}

/// A URL for `psql` that names the database but holds no password: libpq reads it from the
/// run directory's `pgpass` (`?passfile=`).
#[must_use]
pub fn psql_url(admin: &DatabaseUrl, database: &str) -> String {
    let passfile = TestSettings::get().run_dir.join("pgpass");
    let mut url = format!(
        "postgresql://{}@{}:{}/{database}",
        admin.username, admin.host, admin.port
    );
    if passfile.exists() {
        let path: String =
            url::form_urlencoded::byte_serialize(passfile.to_string_lossy().as_bytes()).collect();
        url.push_str("?passfile=");
        url.push_str(&path);
    }
    url
}

/// The server `state.json` names, if it answers.
async fn running_server(dir: &Path) -> Option<Attached> {
    let admin = read_state(dir)?;
    // A running postmaster on a loaded machine may take a while to answer: it is waited for,
    // not replaced under the feet of the processes using it.
    let running =
        process::postmaster_pid(&dir.join("server/pgdata")).is_some_and(process::is_postgres);
    let patience = Duration::from_secs(if running { 30 } else { 2 });
    let connection = tokio::time::timeout(
        patience,
        PgConnection::connect_with(&admin.connect_options()),
    )
    .await
    .ok()?
    .ok()?;
    Some(Attached { admin, connection })
}

/// The running server was started by a process that may not have asked for the extensions this
/// one asks for: they go into the same installation, where `CREATE EXTENSION` reads them.
async fn ensure_extensions() -> Result<(), TestServerError> {
    let config = Config::from_process_env()?;
    if !config.embedded.extensions.is_empty() {
        binaries::provision(&(&config.embedded).into(), &crate::progress::quiet()).await?;
    }
    Ok(())
}

async fn start_and_connect(dir: &Path) -> Result<Attached, TestServerError> {
    let _ = std::fs::remove_file(dir.join("state.json"));
    let admin = start(dir).await?;
    let connection = PgConnection::connect_with(&admin.connect_options()).await?;
    Ok(Attached { admin, connection })
}

async fn start(dir: &Path) -> Result<DatabaseUrl, TestServerError> {
    let config = Config::from_process_env()?;
    let binaries =
        binaries::provision(&(&config.embedded).into(), &crate::progress::quiet()).await?;
    let server = EmbeddedServer::start(
        &binaries,
        &ServerOptions {
            configuration: [("max_connections".to_owned(), "500".to_owned())].into(),
            root: config.embedded.root.clone(),
            ..ServerOptions::throwaway(dir.join("server"), "postgres")
        },
    )
    .await?;
    let url = server.superuser_url("postgres");
    let password_path = dir.join("server/password");
    let password = std::fs::read_to_string(&password_path)
        .map_err(io("cannot read", &password_path))?
        .trim()
        .to_owned();
    cheapen_authentication(&url, &password).await?;
    write_private(
        &dir.join("pgpass"),
        format!("{}:{}:*:{SUPERUSER}:{password}\n", url.host, server.port()).as_bytes(),
    )?;
    let state = State {
        port: server.port(),
        password,
    };
    write_private(
        &dir.join("state.json"),
        &serde_json::to_vec(&state).unwrap_or_default(),
    )?;
    watchdog::spawn(
        dir,
        &server.stop_program(),
        server.privilege(),
        TestSettings::get().idle_seconds,
    )
    .map_err(io("cannot start the watchdog of", dir))?;
    info!(port = state.port, "started the shared test server");
    server.detach();
    Ok(url)
}

/// libpq ignores a password file others can read; so is the state.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), TestServerError> {
    crate::platform::files::write_private(path, contents).map_err(io("cannot write", path))
}

/// SCRAM's 4096 key-derivation rounds cost ~10 ms per connection, on both ends; a test opens
/// several. The throwaway test server stores its (random) password with one round instead:
/// still password authentication, on loopback only.
async fn cheapen_authentication(url: &DatabaseUrl, password: &str) -> Result<(), TestServerError> {
    let mut connection = PgConnection::connect_with(&url.connect_options()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET scram_iterations = 1; ALTER ROLE {SUPERUSER} PASSWORD {}",
        sql::literal(password)
    )))
    .execute(&mut connection)
    .await?;
    let _ = connection.close().await;
    Ok(())
}

fn open_lock(path: &Path) -> Result<File, TestServerError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("cannot open", path))
}

/// A shared lock on `users.lock` for the rest of this process's life.
fn hold_user_lock(dir: &Path) -> Result<(), TestServerError> {
    static USER_LOCK: OnceLock<File> = OnceLock::new();
    if USER_LOCK.get().is_some() {
        return Ok(());
    }
    let path = dir.join("users.lock");
    let file = open_lock(&path)?;
    file.lock_shared().map_err(io("cannot lock", &path))?;
    // Marked for the watchdog, which samples the lock once a second: a process that comes and
    // goes between two samples (a short test under nextest) still counts as use.
    let _ = file.set_modified(SystemTime::now());
    let _ = USER_LOCK.set(file);
    Ok(())
}
