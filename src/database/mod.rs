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

mod failure;
mod pool;
pub mod sql;
mod unit_of_work;

use std::time::Duration;

use serde::Serialize;
use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgConnection};

pub use self::failure::{ConnectionFailure, FailureKind, is_connection_lost};
pub use self::pool::{Connection, Database, VALIDATE_IDLE_AFTER};
pub use self::unit_of_work::UnitOfWork;
use crate::config::{DatabaseUrl, PoolSettings};

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

impl Database {
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
