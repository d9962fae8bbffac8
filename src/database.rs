//! The connection pool with the guide's semantics, the `get_db` unit of work, pool statistics,
//! and connection failures classified into the guide's troubleshooting cases.
//!
//! Requests take connections from a bb8 pool of sqlx `PgConnection`s (each keeps its prepared
//! statements). Unlike sqlx's own pool it sends nothing when a connection is given back, and a
//! connection is checked with a round trip only when it was idle longer than
//! [`VALIDATE_IDLE_AFTER`] or after another connection was found dead: a read by id is one
//! round trip. A connection that died anyway (a restart a moment ago) fails its first statement
//! with a connection error; [`Database::run`] then retries the work once on a live connection.
//! Migrations and other maintenance use a small sqlx pool beside it
//! ([`Database::maintenance_pool`]).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::config::{DatabaseUrl, PoolSettings};

/// Idle connections are closed after this long (and the pool refilled to its size), so that
/// overflow connections opened under load go away.
const OVERFLOW_IDLE: Duration = Duration::from_secs(30);
/// A connection idle longer than this is pinged before it is handed out: idle connections are
/// what restarts, idle timeouts of firewalls and server restarts kill. One used more recently
/// goes out unchecked; if it is dead after all, [`Database::run`] retries on another.
pub const VALIDATE_IDLE_AFTER: Duration = Duration::from_secs(1);
/// The maintenance pool (migrations, status): this many connections at most.
const MAINTENANCE_CONNECTIONS: u32 = 2;
/// An acquisition that takes longer than this is counted as having waited for a connection.
const WAIT_THRESHOLD: Duration = Duration::from_millis(1);
/// Waiting this long for a connection while the pool is below its maximum means it cannot open
/// one, so the server is tried directly: sqlx retries a refused connection until the pool
/// timeout (it takes the server for starting up), which would hold a request 30 s for a server
/// that is down.
const SERVER_CHECK_AFTER: Duration = Duration::from_millis(500);
/// Meanwhile the server is tried this often, so that requests waiting through a restart get a
/// connection as soon as it is back, not at the next [`SERVER_CHECK_AFTER`] (a 0.2 s restart
/// under load left ~0.3 s of no answers after the server was back).
const SERVER_CHECK_EVERY: Duration = Duration::from_millis(100);
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

/// The maintenance pool: migrations, their status, the drift check. Small and closed when idle;
/// requests never use it.
fn maintenance_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .min_connections(0)
        .max_connections(MAINTENANCE_CONNECTIONS)
        .idle_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
}

/// Whether `error` says the connection is gone rather than that the statement failed: a broken
/// socket, or the server shutting down or restarting (SQLSTATE class 08, 57P01 admin shutdown,
/// 57P02 crash shutdown, 57P03 cannot connect now).
#[must_use]
pub fn is_connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// A connection as the pool keeps it.
#[derive(Debug)]
struct PooledConnection {
    raw: PgConnection,
    /// When it was last given back (or opened).
    returned_at: Instant,
    /// The pool's `Liveness::dead_seen` when it was last known alive.
    checked_in_epoch: u64,
    /// Found dead, or left inside a transaction: closed instead of given back.
    discard: bool,
}

/// What the pool knows about its connections' health, shared with its manager.
#[derive(Debug, Default)]
struct Liveness {
    /// Bumped each time a connection is found dead: every other connection is then checked once
    /// before use, as a restart kills them all.
    dead_seen: AtomicU64,
    /// Whether any connection has been lent out since the pool opened its connections.
    lent: AtomicBool,
}

/// Opens and checks connections for bb8.
#[derive(Debug)]
struct Manager {
    options: PgConnectOptions,
    liveness: Arc<Liveness>,
}

impl bb8::ManageConnection for Manager {
    type Connection = PooledConnection;
    type Error = sqlx::Error;

    async fn connect(&self) -> Result<PooledConnection, sqlx::Error> {
        Ok(PooledConnection {
            raw: PgConnection::connect_with(&self.options).await?,
            returned_at: Instant::now(),
            checked_in_epoch: self.liveness.dead_seen.load(Ordering::Relaxed),
            discard: false,
        })
    }

    async fn is_valid(&self, connection: &mut PooledConnection) -> Result<(), sqlx::Error> {
        let epoch = self.liveness.dead_seen.load(Ordering::Relaxed);
        if connection.returned_at.elapsed() >= VALIDATE_IDLE_AFTER
            || connection.checked_in_epoch != epoch
        {
            connection.raw.ping().await?;
            connection.checked_in_epoch = epoch;
        }
        Ok(())
    }

    fn has_broken(&self, connection: &mut PooledConnection) -> bool {
        connection.returned_at = Instant::now();
        connection.discard
    }
}

/// A connection lent by the pool; given back when dropped. Use it as a `PgConnection`
/// (`&mut *connection`).
pub struct Connection {
    // Declared before `_turn`, so dropped first: the connection is idle again when the next
    // request in line is let through.
    inner: bb8::PooledConnection<'static, Manager>,
    /// This request's place among those holding or taking a connection.
    _turn: OwnedSemaphorePermit,
    /// Taken from the idle connections (it may have died there), not opened for this request.
    reused: bool,
}

impl std::ops::Deref for Connection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner.raw
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner.raw
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Connection")
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Closes it instead of giving it back.
    fn discard(&mut self) {
        self.inner.discard = true;
    }
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
#[derive(Clone)]
pub struct Database {
    pool: bb8::Pool<Manager>,
    maintenance: PgPool,
    /// Shared: a `Database` is cloned into every request's state.
    options: Arc<PgConnectOptions>,
    liveness: Arc<Liveness>,
    /// One permit per connection the pool may open, handed out first come, first served.
    /// bb8 alone lets a newcomer take a connection just given back while the request woken
    /// for it is still on its way, and that request then queues again at the back: under
    /// load a request could be overtaken again and again until its pool timeout (measured,
    /// 64 connections on a pool of 15: p99 24.9 ms with bb8 alone, 19.8 ms in line, same rate).
    turns: Arc<Semaphore>,
    /// Direct connection attempts under way ([`Database::unreachable_server`]).
    probing: Arc<AtomicU32>,
    settings: PoolSettings,
    counters: Arc<Counters>,
}

impl fmt::Debug for Database {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Database")
            .field("settings", &self.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// The guide's pool: `size` connections kept (opened in the background), up to
    /// `size + max_overflow` under load, waiting at most `timeout`, each replaced after
    /// `recycle`. Needs a Tokio runtime.
    #[must_use]
    pub fn connect_lazy(url: &DatabaseUrl, settings: &PoolSettings) -> Self {
        let options = connect_options(url, settings);
        let liveness = Arc::new(Liveness::default());
        let pool = bb8::Pool::builder()
            .min_idle(settings.size)
            .max_size(settings.max_connections())
            .connection_timeout(settings.timeout)
            .max_lifetime(settings.recycle)
            .idle_timeout(OVERFLOW_IDLE)
            .test_on_check_out(true)
            // The most recently used connection goes out first: under light load the same few
            // stay warm (and need no check), and the overflow ones go idle and are closed.
            .queue_strategy(bb8::QueueStrategy::Lifo)
            // No retries with backoff (up to half the pool timeout between attempts): after an
            // outage the next request connects at once, and a waiting one gets the connection
            // `unreachable_server` opens.
            .retry_connection(false)
            .build_unchecked(Manager {
                options: options.clone(),
                liveness: Arc::clone(&liveness),
            });
        Self {
            pool,
            maintenance: maintenance_pool_options().connect_lazy_with(options.clone()),
            options: Arc::new(options),
            liveness,
            turns: Arc::new(Semaphore::new(settings.max_connections() as usize)),
            probing: Arc::default(),
            settings: settings.clone(),
            counters: Arc::default(),
        }
    }

    /// A small sqlx pool on the same database for migrations and maintenance (at most two
    /// connections, closed when idle); outside the guide's pool size, and not for requests.
    #[must_use]
    pub fn maintenance_pool(&self) -> &PgPool {
        &self.maintenance
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
    pub async fn acquire(&self) -> Result<Connection, DatabaseError> {
        let started = Instant::now();
        let result = tokio::select! {
            // Polled first: a connection at hand is taken without arming the server check.
            biased;
            result = tokio::time::timeout(self.settings.timeout, self.take_turn()) => {
                result.unwrap_or(Err(sqlx::Error::PoolTimedOut))
            }
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
        result
            .map_err(|error| {
                self.counters
                    .connection_errors
                    .fetch_add(1, Ordering::Relaxed);
                let state = self.pool.state();
                let all_busy = state.connections >= self.settings.max_connections()
                    && state.idle_connections == 0;
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
            .map(|(inner, turn)| Connection {
                // Opened for this request: nothing could have killed it since.
                reused: inner.returned_at.elapsed() > Duration::from_millis(1)
                    || self.liveness.lent.swap(true, Ordering::Relaxed),
                inner,
                _turn: turn,
            })
    }

    /// Waits for this request's turn, then takes a connection: with at most as many turns out
    /// as connections, one is idle, or bb8 opens one or waits for one being checked.
    async fn take_turn(
        &self,
    ) -> Result<
        (
            bb8::PooledConnection<'static, Manager>,
            OwnedSemaphorePermit,
        ),
        sqlx::Error,
    > {
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .map_err(|_closed| sqlx::Error::PoolClosed)?;
        let connection = self.pool.get_owned().await.map_err(|error| match error {
            bb8::RunError::User(error) => error,
            bb8::RunError::TimedOut => sqlx::Error::PoolTimedOut,
        })?;
        Ok((connection, turn))
    }

    /// Runs `work` (reads, or a single statement that commits by itself) on a pooled
    /// connection. When a connection taken from the idle ones turns out dead on its first
    /// statement (the server restarted or dropped it), nothing of the work ran: it is
    /// discarded, every other idle connection is checked before its next use, and `work` runs
    /// once more on a live one. Errors other than a lost connection are returned as they are.
    ///
    /// # Errors
    ///
    /// As [`Database::acquire`], or the statement's error ([`DatabaseError::Query`]).
    pub async fn run<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error> + Clone,
    ) -> Result<T, DatabaseError> {
        let mut connection = self.acquire().await?;
        // A copy for the retry (closures capturing references are copied for free).
        match work.clone()(&mut connection).await {
            Err(error) if connection.reused && is_connection_lost(&error) => {
                debug!(%error, "a pooled connection was dead; retrying on a live one");
                connection.discard();
                self.liveness.dead_seen.fetch_add(1, Ordering::Relaxed);
                drop(connection);
                let mut connection = self.acquire().await?;
                let result = work(&mut connection).await;
                if let Err(error) = &result
                    && is_connection_lost(error)
                {
                    connection.discard();
                }
                Ok(result?)
            }
            Err(error) => {
                if is_connection_lost(&error) {
                    connection.discard();
                }
                Err(DatabaseError::Query(error))
            }
            Ok(value) => Ok(value),
        }
    }

    /// Resolves only once the server turns out to be down: while an acquisition waits with the
    /// pool below its maximum (so not because every connection is busy), connects directly
    /// every [`SERVER_CHECK_EVERY`] when the pool has room for one more attempt
    /// ([`Database::probe_slot`]), gives a connection it opens to the pool, and returns the
    /// error of the first attempt that fails once the acquisition has waited
    /// [`SERVER_CHECK_AFTER`], unless it is one sqlx waits out ([`WAIT_FOR_CODES`]). A server
    /// that does not answer at all is left to `DATABASE_POOL_TIMEOUT`, which is what that
    /// setting is for.
    async fn unreachable_server(&self) -> sqlx::Error {
        let started = Instant::now();
        loop {
            tokio::time::sleep(SERVER_CHECK_EVERY).await;
            let Some(_probe) = self.probe_slot() else {
                continue;
            };
            match tokio::time::timeout(SERVER_CHECK_TIMEOUT, self.options.connect()).await {
                Ok(Ok(connection)) => {
                    // The server is up: this connection goes to the pool, and so to a waiting
                    // request (the pool does not retry a failed connect itself).
                    let _ = self.pool.add(PooledConnection {
                        raw: connection,
                        returned_at: Instant::now(),
                        checked_in_epoch: self.liveness.dead_seen.load(Ordering::Relaxed),
                        discard: false,
                    });
                }
                Ok(Err(sqlx::Error::Database(error)))
                    if error
                        .code()
                        .is_some_and(|code| WAIT_FOR_CODES.contains(&code.as_ref())) => {}
                Ok(Err(error)) if started.elapsed() >= SERVER_CHECK_AFTER => return error,
                Ok(Err(_)) | Err(_) => {}
            }
        }
    }

    /// Room for one more direct connection attempt: the pool's open connections plus the
    /// attempts under way stay within its maximum. Every waiting request tried its own before,
    /// and a server back from a restart under load was met by ~90 new sessions in its first
    /// half second (each a process and a SCRAM exchange) for a pool of 15, most closed at once.
    fn probe_slot(&self) -> Option<ProbeSlot<'_>> {
        let room = self
            .settings
            .max_connections()
            .saturating_sub(self.pool.state().connections);
        self.probing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |probing| {
                (probing < room).then_some(probing + 1)
            })
            .ok()?;
        Some(ProbeSlot(&self.probing))
    }

    /// Starts a unit of work: see [`UnitOfWork`].
    ///
    /// # Errors
    ///
    /// As [`Database::acquire`], or [`DatabaseError::Query`] when `BEGIN` fails.
    pub async fn begin(&self) -> Result<UnitOfWork, DatabaseError> {
        let mut connection = self.acquire().await?;
        let begun = sqlx::raw_sql("BEGIN").execute(&mut *connection).await;
        if let Err(error) = begun {
            if is_connection_lost(&error) {
                connection.discard();
            }
            return Err(error.into());
        }
        Ok(UnitOfWork {
            connection,
            finished: false,
        })
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
        let state = self.pool.state();
        let (size, idle) = (state.connections, state.idle_connections);
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

    /// Closes the connections: the idle ones at once, lent ones when given back; no new
    /// ones are opened by the maintenance pool.
    pub async fn close(&self) {
        self.maintenance.close().await;
        // bb8 has no close: lend out each idle connection once and discard it.
        for _ in 0..self.pool.state().idle_connections {
            match tokio::time::timeout(Duration::from_millis(100), self.pool.get()).await {
                Ok(Ok(mut connection)) => connection.discard = true,
                _ => break,
            }
        }
    }
}

/// A direct connection attempt under way, counted until it ends or is given up.
struct ProbeSlot<'a>(&'a AtomicU32);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
/// its connection is closed, which rolls it back.
#[derive(Debug)]
pub struct UnitOfWork {
    connection: Connection,
    finished: bool,
}

impl Drop for UnitOfWork {
    fn drop(&mut self) {
        if !self.finished {
            self.connection.discard();
        }
    }
}

impl UnitOfWork {
    /// The connection to run statements on.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// Commits when `result` is `Ok`, rolls back when it is `Err`; returns `result`.
    ///
    /// # Errors
    ///
    /// The `Err` of `result`, or the commit's failure converted into `E`.
    pub async fn finish<T, E>(mut self, result: Result<T, E>) -> Result<T, E>
    where
        E: From<DatabaseError>,
    {
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        let ended = sqlx::raw_sql(end).execute(&mut *self.connection).await;
        // Only a connection whose transaction ended goes back to the pool.
        self.finished = ended.is_ok();
        match (result, ended) {
            (Ok(value), Ok(_)) => Ok(value),
            (Ok(_), Err(error)) => Err(E::from(DatabaseError::Query(error))),
            (Err(error), Ok(_)) => Err(error),
            (Err(error), Err(rollback)) => {
                warn!(%rollback, "rollback failed; the connection is discarded");
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
            // A Unix socket's file is gone while its server is down.
            sqlx::Error::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
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
                format!("Check what listens on the PostgreSQL port: `ss -ltnp 'sport = :{port}'`"),
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
