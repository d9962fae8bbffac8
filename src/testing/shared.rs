//! One embedded PostgreSQL 16 server for a whole test run, shared by every test process.
//!
//! In the run directory (`PGHARNESS_TEST_DIR`, default `<tmp>/pgharness-test-<uid>`):
//! - `start.lock`: held (exclusive) while a process starts or attaches to the server, and by the
//!   watchdog while it stops it;
//! - `users.lock`: every test process holds a shared lock on it until it exits (the kernel
//!   releases it even after SIGKILL);
//! - `state.json`: the running server's port and password;
//! - `server/`: the server's home, tuned for tests (fsync off);
//! - `watchdog.sh`: a detached shell loop that stops the server once no process has held
//!   `users.lock` for the idle timeout (`PGHARNESS_TEST_IDLE_SECONDS`, default 10).
//!
//! Test databases are named `pgh_t_<pid>_<n>`: any of them whose process is gone is dropped by
//! the next process that attaches.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, PgConnection};
use tracing::{info, warn};

use super::TestDbError;
use crate::binaries;
use crate::config::{Config, DatabaseUrl};
use crate::embedded::{EmbeddedServer, SUPERUSER, ServerOptions};

pub(super) const TEST_DATABASE_PREFIX: &str = "pgh_t_";
const DEFAULT_IDLE_SECONDS: u64 = 10;

#[derive(Debug, Serialize, Deserialize)]
struct State {
    port: u16,
    password: String,
}

/// The run directory.
#[must_use]
pub fn run_dir() -> PathBuf {
    std::env::var_os("PGHARNESS_TEST_DIR").map_or_else(
        || std::env::temp_dir().join(format!("pgharness-test-{}", nix::unistd::getuid())),
        PathBuf::from,
    )
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TestDbError {
    let path = path.to_owned();
    move |source| TestDbError::Io {
        action,
        path,
        source,
    }
}

/// The superuser URL (database `postgres`) of the shared server, started if needed; or the
/// server named by `TEST_DATABASE_URL`.
pub(super) async fn attach() -> Result<DatabaseUrl, TestDbError> {
    if let Some(url) = std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
    {
        let url = DatabaseUrl::parse(&url)?.with_database("postgres");
        drop_stale_databases(&url).await?;
        return Ok(url);
    }
    let dir = run_dir();
    std::fs::create_dir_all(&dir).map_err(io("cannot create", &dir))?;
    let start_lock_path = dir.join("start.lock");
    let start_lock = open_lock(&start_lock_path)?;
    let start_lock = tokio::task::spawn_blocking(move || start_lock.lock().map(|()| start_lock))
        .await
        .map_err(|error| TestDbError::Setup(error.to_string()))?
        .map_err(io("cannot lock", &start_lock_path))?;
    let result = attach_locked(&dir).await;
    let _ = start_lock.unlock();
    result
}

async fn attach_locked(dir: &Path) -> Result<DatabaseUrl, TestDbError> {
    hold_user_lock(dir)?;
    let state_path = dir.join("state.json");
    if let Some(state) = std::fs::read(&state_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<State>(&bytes).ok())
    {
        let url = DatabaseUrl::local(
            state.port,
            SUPERUSER,
            SecretString::from(state.password),
            "postgres",
        );
        let alive = tokio::time::timeout(
            Duration::from_secs(2),
            PgConnection::connect_with(&url.connect_options()),
        )
        .await;
        if let Ok(Ok(connection)) = alive {
            let _ = connection.close().await;
            drop_stale_databases(&url).await?;
            return Ok(url);
        }
    }
    let _ = std::fs::remove_file(&state_path);
    let url = start(dir).await?;
    drop_stale_databases(&url).await?;
    Ok(url)
}

async fn start(dir: &Path) -> Result<DatabaseUrl, TestDbError> {
    let config = Config::from_lookup(|name| std::env::var(name).ok())?;
    let binaries = binaries::provision(&(&config.embedded).into(), &binaries::quiet()).await?;
    let server = EmbeddedServer::start(
        &binaries,
        &ServerOptions {
            home: dir.join("server"),
            port: None,
            database: "postgres".to_owned(),
            durable: false,
            configuration: [("max_connections".to_owned(), "500".to_owned())].into(),
        },
    )
    .await?;
    let url = server.superuser_url("postgres");
    let password = std::fs::read_to_string(dir.join("server/password"))
        .map_err(io("cannot read", &dir.join("server/password")))?;
    cheapen_authentication(&url, password.trim()).await?;
    let state = State {
        port: server.port(),
        password: password.trim().to_owned(),
    };
    let state_path = dir.join("state.json");
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap_or_default())
        .map_err(io("cannot write", &state_path))?;
    spawn_watchdog(dir, &server)?;
    info!(port = state.port, "started the shared test server");
    server.detach();
    Ok(url)
}

/// SCRAM's 4096 key-derivation rounds cost ~10 ms per connection, on both ends; a test opens
/// several. The throwaway test server stores its (random) password with one round instead:
/// still password authentication, on loopback only.
async fn cheapen_authentication(url: &DatabaseUrl, password: &str) -> Result<(), TestDbError> {
    let mut connection = PgConnection::connect_with(&url.connect_options()).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET scram_iterations = 1; ALTER ROLE {SUPERUSER} PASSWORD '{}'",
        password.replace('\'', "''")
    )))
    .execute(&mut connection)
    .await?;
    let _ = connection.close().await;
    Ok(())
}

fn open_lock(path: &Path) -> Result<File, TestDbError> {
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("cannot open", path))
}

/// A shared lock on `users.lock` for the rest of this process's life.
fn hold_user_lock(dir: &Path) -> Result<(), TestDbError> {
    static USER_LOCK: OnceLock<File> = OnceLock::new();
    if USER_LOCK.get().is_some() {
        return Ok(());
    }
    let path = dir.join("users.lock");
    let file = open_lock(&path)?;
    file.lock_shared().map_err(io("cannot lock", &path))?;
    let _ = USER_LOCK.set(file);
    Ok(())
}

fn shell_quote(word: &std::ffi::OsStr) -> String {
    format!("'{}'", word.to_string_lossy().replace('\'', r"'\''"))
}

/// Starts the detached loop that stops the server once the run is over.
fn spawn_watchdog(dir: &Path, server: &EmbeddedServer) -> Result<(), TestDbError> {
    let idle = std::env::var("PGHARNESS_TEST_IDLE_SECONDS")
        .ok()
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .unwrap_or(DEFAULT_IDLE_SECONDS);
    let stop = server.stop_command();
    let stop_line = std::iter::once(stop.get_program())
        .chain(stop.get_args())
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ");
    let quoted_dir = shell_quote(dir.as_os_str());
    let script = format!(
        "#!/bin/sh\n\
         # Stops the shared test server once no test process has used it for {idle} s.\n\
         cd {quoted_dir} || exit 1\n\
         idle=0\n\
         while [ \"$idle\" -lt {idle} ]; do\n\
         \x20 sleep 1\n\
         \x20 if flock -n -x users.lock true; then idle=$((idle + 1)); else idle=0; fi\n\
         \x20 [ -f state.json ] || exit 0\n\
         done\n\
         exec 9>start.lock\n\
         flock -x 9\n\
         if flock -n -x users.lock true; then\n\
         \x20 rm -f state.json\n\
         \x20 {stop_line} >/dev/null 2>&1\n\
         else\n\
         \x20 exec sh {quoted_dir}/watchdog.sh\n\
         fi\n"
    );
    let path = dir.join("watchdog.sh");
    std::fs::write(&path, script).map_err(io("cannot write", &path))?;
    std::process::Command::new("sh")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(io("cannot start", &path))?;
    Ok(())
}

/// Drops test databases whose process is gone (killed runs leak them).
async fn drop_stale_databases(admin: &DatabaseUrl) -> Result<(), TestDbError> {
    let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
            .bind(TEST_DATABASE_PREFIX)
            .fetch_all(&mut connection)
            .await?;
    for name in names {
        let owner = name
            .strip_prefix(TEST_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<i32>().ok());
        let alive = owner.is_some_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        });
        if !alive {
            let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut connection)
                .await
            {
                warn!(database = name, %error, "could not drop a stale test database");
            }
        }
    }
    let _ = connection.close().await;
    Ok(())
}
