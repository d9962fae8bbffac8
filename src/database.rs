//! The connection pool with the guide's semantics, the `get_db` unit of work, pool statistics,
//! and connection failures classified into the guide's troubleshooting cases.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::ConnectOptions as _;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tracing::warn;

use crate::config::{DatabaseUrl, PoolSettings};

/// Overflow connections (above the pool size) are closed after this long idle.
const OVERFLOW_IDLE: Duration = Duration::from_secs(30);
/// An acquisition that takes longer than this is counted as having waited for a connection.
const WAIT_THRESHOLD: Duration = Duration::from_millis(1);
/// Waiting this long for a connection while the pool is below its maximum means it cannot open
/// one, so the server is tried directly: sqlx retries a refused connection until the pool
/// timeout (it takes the server for starting up), which would hold a request 30 s for a server
/// that is down.
const SERVER_CHECK_AFTER: Duration = Duration::from_millis(500);
/// How long that direct attempt may take; a server this slow is left to the pool timeout.
const SERVER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// SQLSTATEs worth waiting for, as sqlx does: `cannot_connect_now` (the server is starting up)
/// and `too_many_connections` (often a connection just closed and not yet noticed).
const WAIT_FOR_CODES: [&str; 2] = ["57P03", "53300"];

/// Connection options: `DATABASE_ECHO` logs every statement; slow ones are always warned about.
#[must_use]
pub fn connect_options(url: &DatabaseUrl, settings: &PoolSettings) -> PgConnectOptions {
    let echo_level = if settings.echo {
        tracing::log::LevelFilter::Info
    } else {
        tracing::log::LevelFilter::Debug
    };
    // Named, so that the Database screen and `pg_stat_activity` tell its sessions apart.
    url.connect_options()
        .application_name("pgharness")
        .log_statements(echo_level)
        .log_slow_statements(tracing::log::LevelFilter::Warn, settings.slow_statement)
}

/// The guide's pool: `size` connections kept, up to `size + max_overflow` under load, waiting
/// at most `timeout`, replaced after `recycle`, each checked before use (pre-ping: a server
/// restart kills idle connections, even ones used a moment ago).
#[must_use]
pub fn pool_options(settings: &PoolSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .min_connections(settings.size)
        .max_connections(settings.max_connections())
        .acquire_timeout(settings.timeout)
        .max_lifetime(settings.recycle)
        .idle_timeout(OVERFLOW_IDLE)
        .test_before_acquire(true)
}

/// Why the pool gave no connection or a statement failed.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// Every connection is busy and none came free within `DATABASE_POOL_TIMEOUT`.
    #[error(
        "connection pool exhausted: {size} + {overflow} overflow connections busy, waited {} s. \
         Increase DATABASE_MAX_OVERFLOW (or DATABASE_POOL_SIZE), investigate slow queries \
         holding connections, make sure transactions and connections are released, or add \
         application instances",
        waited.as_secs_f64().round()
    )]
    PoolExhausted {
        /// The pool's size.
        size: u32,
        /// Its overflow.
        overflow: u32,
        /// How long the request waited.
        waited: Duration,
    },
    /// No connection could be opened.
    #[error("cannot connect to the database: {0}")]
    Connection(ConnectionFailure),
    /// A statement failed.
    #[error(transparent)]
    Query(#[from] sqlx::Error),
}

/// Pool usage for the API and UI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Open connections.
    pub size: u32,
    /// Connections open and idle.
    pub idle: u32,
    /// Connections lent out.
    pub in_use: u32,
    /// Pool size + max overflow.
    pub max: u32,
    /// Acquisitions that had to wait for a connection.
    pub waited: u64,
    /// Total time spent waiting, in milliseconds.
    pub wait_ms: u64,
    /// Failed attempts to get a connection (exhaustion included).
    pub connection_errors: u64,
    /// Acquisitions refused because every connection stayed busy for the pool timeout.
    pub exhausted: u64,
}

#[derive(Debug, Default)]
struct Counters {
    waited: AtomicU64,
    wait_micros: AtomicU64,
    connection_errors: AtomicU64,
    exhausted: AtomicU64,
}

/// The pool, with the guide's semantics and usage statistics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
    settings: PoolSettings,
    counters: Arc<Counters>,
}

impl Database {
    /// A pool that connects on first use.
    #[must_use]
    pub fn connect_lazy(url: &DatabaseUrl, settings: &PoolSettings) -> Self {
        Self {
            pool: pool_options(settings).connect_lazy_with(connect_options(url, settings)),
            settings: settings.clone(),
            counters: Arc::default(),
        }
    }

    /// The sqlx pool, for queries that need no statistics.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The settings the pool was built with.
    #[must_use]
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// A connection from the pool.
    ///
    /// # Errors
    ///
    /// [`DatabaseError::PoolExhausted`] when every connection stayed busy for the pool timeout;
    /// [`DatabaseError::Connection`] when no connection could be opened, within about a
    /// second when the server refuses connections.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, DatabaseError> {
        let started = Instant::now();
        let result = tokio::select! {
            result = self.pool.acquire() => result,
            failure = self.unreachable_server() => Err(failure),
        };
        let waited = started.elapsed();
        if waited > WAIT_THRESHOLD {
            self.counters.waited.fetch_add(1, Ordering::Relaxed);
            self.counters.wait_micros.fetch_add(
                u64::try_from(waited.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        result.map_err(|error| {
            self.counters
                .connection_errors
                .fetch_add(1, Ordering::Relaxed);
            let all_busy =
                self.pool.size() >= self.settings.max_connections() && self.pool.num_idle() == 0;
            match error {
                sqlx::Error::PoolTimedOut if all_busy => {
                    self.counters.exhausted.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        size = self.settings.size,
                        overflow = self.settings.max_overflow,
                        "connection pool exhausted"
                    );
                    DatabaseError::PoolExhausted {
                        size: self.settings.size,
                        overflow: self.settings.max_overflow,
                        waited,
                    }
                }
                other => DatabaseError::Connection(ConnectionFailure::new(&other)),
            }
        })
    }

    /// Resolves only once the server turns out to be down: while an acquisition waits with the
    /// pool below its maximum (so not because every connection is busy), connects directly
    /// every [`SERVER_CHECK_AFTER`] and returns that attempt's error, unless it is one sqlx
    /// waits out ([`WAIT_FOR_CODES`]). A server that does not answer at all is left to
    /// `DATABASE_POOL_TIMEOUT`, which is what that setting is for.
    async fn unreachable_server(&self) -> sqlx::Error {
        loop {
            tokio::time::sleep(SERVER_CHECK_AFTER).await;
            if self.pool.size() >= self.settings.max_connections() {
                continue;
            }
            let options = self.pool.connect_options();
            match tokio::time::timeout(SERVER_CHECK_TIMEOUT, options.connect()).await {
                Ok(Ok(connection)) => {
                    // The server is up: the pool will get its connection.
                    let _ = sqlx::Connection::close(connection).await;
                }
                Ok(Err(sqlx::Error::Database(error)))
                    if error
                        .code()
                        .is_some_and(|code| WAIT_FOR_CODES.contains(&code.as_ref())) => {}
                Ok(Err(error)) => return error,
                Err(_silent) => {}
            }
        }
    }

    /// Starts a unit of work: see [`UnitOfWork`].
    ///
    /// # Errors
    ///
    /// As [`Database::acquire`], or [`DatabaseError::Query`] when `BEGIN` fails.
    pub async fn begin(&self) -> Result<UnitOfWork, DatabaseError> {
        let connection = self.acquire().await?;
        // `PgPool::begin` does exactly this, but would bypass our exhaustion error and counters.
        let transaction = Transaction::begin(connection, None).await?;
        Ok(UnitOfWork { transaction })
    }

    /// Runs `work` in a transaction, the guide's `get_db`: committed when it returns `Ok`,
    /// rolled back when it returns `Err` or panics.
    ///
    /// # Errors
    ///
    /// The error of `work`, or a [`DatabaseError`] (converted into `E`) from the database.
    pub async fn transaction<T, E>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DatabaseError>,
    {
        let mut unit = self.begin().await?;
        let result = work(unit.connection()).await;
        unit.finish(result).await
    }

    /// Current pool usage.
    #[must_use]
    pub fn stats(&self) -> PoolStats {
        let size = self.pool.size();
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        PoolStats {
            size,
            idle,
            in_use: size.saturating_sub(idle),
            max: self.settings.max_connections(),
            waited: self.counters.waited.load(Ordering::Relaxed),
            wait_ms: self.counters.wait_micros.load(Ordering::Relaxed) / 1000,
            connection_errors: self.counters.connection_errors.load(Ordering::Relaxed),
            exhausted: self.counters.exhausted.load(Ordering::Relaxed),
        }
    }

    /// The guide's sizing rule: pool size + overflow must fit in the server's
    /// `max_connections` minus its reserved connections. `Some(warning)` when it does not.
    ///
    /// # Errors
    ///
    /// [`DatabaseError`] when the server cannot be asked.
    pub async fn sizing_warning(&self) -> Result<Option<String>, DatabaseError> {
        let mut connection = self.acquire().await?;
        let limits = ServerLimits::query(&mut connection).await?;
        Ok(limits.warning(&self.settings))
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The server's connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// The server's `max_connections`.
    pub max_connections: u32,
    /// Connections reserved for superusers.
    pub reserved: u32,
}

impl ServerLimits {
    /// Reads `max_connections`, `superuser_reserved_connections` and `reserved_connections`.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] from the query.
    pub async fn query(connection: &mut PgConnection) -> Result<Self, sqlx::Error> {
        let (max_connections, reserved): (i32, i32) = sqlx::query_as(
            "SELECT current_setting('max_connections')::int, \
                    current_setting('superuser_reserved_connections')::int \
                    + coalesce(current_setting('reserved_connections', true)::int, 0)",
        )
        .fetch_one(connection)
        .await?;
        Ok(Self {
            max_connections: u32::try_from(max_connections).unwrap_or(0),
            reserved: u32::try_from(reserved).unwrap_or(0),
        })
    }

    /// A warning when `settings` could open more connections than the server allows.
    #[must_use]
    pub fn warning(&self, settings: &PoolSettings) -> Option<String> {
        let available = self.max_connections.saturating_sub(self.reserved);
        (settings.max_connections() > available).then(|| {
            format!(
                "pool size + overflow ({} + {} = {}) exceeds the server's max_connections ({}) minus \
                 its reserved connections ({}): under load, connections will be refused. Lower \
                 DATABASE_POOL_SIZE / DATABASE_MAX_OVERFLOW or raise max_connections{}",
                settings.size,
                settings.max_overflow,
                settings.max_connections(),
                self.max_connections,
                self.reserved,
                " (embedded server: PGHARNESS_PG_CONF=\"max_connections=200\")"
            )
        })
    }
}

/// A transaction with the guide's `get_db` semantics, usable anywhere: [`UnitOfWork::finish`]
/// commits an `Ok` result and rolls back an `Err`; dropped unfinished (an early return, a panic),
/// it rolls back.
#[derive(Debug)]
pub struct UnitOfWork {
    transaction: Transaction<'static, Postgres>,
}

impl UnitOfWork {
    /// The connection to run statements on.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.transaction
    }

    /// Commits when `result` is `Ok`, rolls back when it is `Err`; returns `result`.
    ///
    /// # Errors
    ///
    /// The `Err` of `result`, or the commit's failure converted into `E`.
    pub async fn finish<T, E>(self, result: Result<T, E>) -> Result<T, E>
    where
        E: From<DatabaseError>,
    {
        match result {
            Ok(value) => {
                self.transaction
                    .commit()
                    .await
                    .map_err(|error| E::from(DatabaseError::Query(error)))?;
                Ok(value)
            }
            Err(error) => {
                if let Err(rollback) = self.transaction.rollback().await {
                    warn!(%rollback, "rollback failed; the connection is discarded");
                }
                Err(error)
            }
        }
    }
}

/// The guide's troubleshooting cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing listens at the host and port.
    ConnectionRefused,
    /// Wrong user or password.
    AuthenticationFailed,
    /// The database does not exist.
    DatabaseDoesNotExist,
    /// No answer in time.
    Timeout,
    /// The TLS negotiation failed.
    Tls,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// Sorts a connection error into a troubleshooting case.
    #[must_use]
    pub fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                Self::ConnectionRefused
            }
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Self::Timeout,
            sqlx::Error::PoolTimedOut => Self::Timeout,
            sqlx::Error::Tls(_) => Self::Tls,
            sqlx::Error::Database(database) => match database.code().as_deref() {
                Some("28P01" | "28000") => Self::AuthenticationFailed,
                Some("3D000") => Self::DatabaseDoesNotExist,
                _ => Self::Other,
            },
            _ => Self::Other,
        }
    }

    /// The cause in the guide's words (`connection refused`, …).
    #[must_use]
    pub fn cause(self) -> &'static str {
        match self {
            Self::ConnectionRefused => "connection refused",
            Self::AuthenticationFailed => "authentication failed",
            Self::DatabaseDoesNotExist => "database does not exist",
            Self::Timeout => "timeout",
            Self::Tls => "TLS error",
            Self::Other => "connection error",
        }
    }

    /// The guide's troubleshooting steps for this case.
    #[must_use]
    pub fn remedies(self, url: &DatabaseUrl) -> Vec<String> {
        let (host, port, user, database) = (&url.host, url.port, &url.username, &url.database);
        match self {
            Self::ConnectionRefused => vec![
                format!(
                    "Ensure PostgreSQL is running on {host}:{port}: `pg_ctl status`, or `sudo systemctl status postgresql`"
                ),
                format!("Check the PostgreSQL port: `ss -ltnp | grep {port}`"),
                format!("Verify PostgreSQL accepts connections: `psql -h {host} -p {port} -U {user} -d {database}`"),
                "Or unset DATABASE_URL to use the embedded PostgreSQL server".to_owned(),
            ],
            Self::AuthenticationFailed => vec![
                format!("Verify the credentials of user \"{user}\" in DATABASE_URL (.env or the environment)"),
                "Check the server's pg_hba.conf allows password authentication from this host".to_owned(),
                "Reload PostgreSQL configuration: `sudo systemctl reload postgresql`".to_owned(),
            ],
            Self::DatabaseDoesNotExist => vec![
                format!("Create the database: `psql -h {host} -p {port} -U {user} -c 'CREATE DATABASE {database};'`"),
                format!("Or using createdb: `createdb -h {host} -p {port} -U {user} {database}`"),
                "Or fix the database name at the end of DATABASE_URL".to_owned(),
            ],
            Self::Timeout => vec![
                format!("Check that {host}:{port} is reachable from this machine (firewall, security groups)"),
                "Investigate slow queries or a busy server blocking connections".to_owned(),
                "Increase DATABASE_POOL_TIMEOUT if the server is known to be slow".to_owned(),
            ],
            Self::Tls => vec![
                "Check the TLS mode in DATABASE_URL (`?sslmode=require`, `?ssl=require` or `?sslmode=disable`)".to_owned(),
                "Check the server has TLS enabled and a certificate this machine trusts".to_owned(),
            ],
            Self::Other => vec![
                "Read the error above and the PostgreSQL server log".to_owned(),
                "Run `pgharness check` again with RUST_LOG=debug for details".to_owned(),
            ],
        }
    }
}

/// A failed connection attempt, classified, with a message that holds no password.
#[derive(Debug)]
pub struct ConnectionFailure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// The driver's message.
    pub message: String,
}

impl ConnectionFailure {
    /// Classifies a connection error.
    #[must_use]
    pub fn new(error: &sqlx::Error) -> Self {
        Self {
            kind: FailureKind::of(error),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for ConnectionFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}: {}", self.kind.cause(), self.message)
    }
}
