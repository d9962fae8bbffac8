//! The connection pool, with the guide's semantics, and connection failures classified into the
//! guide's troubleshooting cases.

use std::fmt;
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{DatabaseUrl, PoolSettings};

/// Statements slower than this are logged as warnings in any mode (the guide's alert threshold).
pub const SLOW_STATEMENT: Duration = Duration::from_secs(1);
/// Overflow connections (above the pool size) are closed after this long idle.
const OVERFLOW_IDLE: Duration = Duration::from_secs(30);

/// Connection options: `DATABASE_ECHO` logs every statement; slow ones are always warned about.
#[must_use]
pub fn connect_options(url: &DatabaseUrl, settings: &PoolSettings) -> PgConnectOptions {
    let echo_level = if settings.echo {
        tracing::log::LevelFilter::Info
    } else {
        tracing::log::LevelFilter::Debug
    };
    url.connect_options()
        .log_statements(echo_level)
        .log_slow_statements(tracing::log::LevelFilter::Warn, SLOW_STATEMENT)
}

/// The guide's pool: `size` connections kept, up to `size + max_overflow` under load, waiting
/// at most `timeout`, replaced after `recycle`, each checked before use (pre-ping).
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

/// A pool that connects on first use.
#[must_use]
pub fn lazy_pool(url: &DatabaseUrl, settings: &PoolSettings) -> PgPool {
    pool_options(settings).connect_lazy_with(connect_options(url, settings))
}

/// The guide's troubleshooting cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    ConnectionRefused,
    AuthenticationFailed,
    DatabaseDoesNotExist,
    Timeout,
    Tls,
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
    pub kind: FailureKind,
    pub message: String,
}

impl ConnectionFailure {
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
