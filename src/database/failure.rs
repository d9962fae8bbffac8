//! Connection failures: whether an error means the connection is lost, and the guide's
//! troubleshooting cases with their remedies.

use std::fmt;

use crate::config::DatabaseUrl;

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
