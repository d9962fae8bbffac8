//! The connection pool: a bb8 pool of sqlx connections checked only when they may have died,
//! requests served first come first served, a down server noticed within about a second, and
//! the small maintenance pool beside it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use super::{ConnectionFailure, DatabaseError, PoolStats, connect_options};
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

/// The maintenance pool: migrations, their status, the drift check. Small and closed when idle;
/// requests never use it.
fn maintenance_pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .min_connections(0)
        .max_connections(MAINTENANCE_CONNECTIONS)
        .idle_timeout(Duration::from_secs(10))
        .test_before_acquire(true)
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
pub(super) struct Liveness {
    /// Bumped each time a connection is found dead: every other connection is then checked once
    /// before use, as a restart kills them all.
    pub(super) dead_seen: AtomicU64,
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
    pub(super) reused: bool,
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
    pub(super) fn discard(&mut self) {
        self.inner.discard = true;
    }
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
    pub(super) liveness: Arc<Liveness>,
    /// One permit per connection the pool may open, handed out first come, first served.
    /// bb8 alone lets a newcomer take a connection just given back while the request woken
    /// for it is still on its way, and that request then queues again at the back: under
    /// load a request could be overtaken again and again until its pool timeout (measured,
    /// 64 connections on a pool of 15: p99 24.9 ms with bb8 alone, 19.8 ms in line, same rate).
    turns: Arc<Semaphore>,
    /// Direct connection attempts under way ([`Database::unreachable_server`]).
    probing: Arc<AtomicU32>,
    pub(super) settings: PoolSettings,
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

    /// Has every connection checked before its next use: the database they were on was
    /// replaced (a snapshot saved or restored ended their sessions).
    pub fn connections_replaced(&self) {
        self.liveness.dead_seen.fetch_add(1, Ordering::Relaxed);
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
