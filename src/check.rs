//! `pgharness check`: the guide's `scripts/test_db_connection.py`, line for line.

use std::fmt::Write as _;

use sqlx::{Connection as _, Row as _};

use crate::config::{Config, DatabaseUrl};
use crate::database::{self, ConnectionFailure, ServerLimits};

const RULE: &str = "======================================================================";
const DRIVER: &str = "sqlx-postgres (async: True)";

/// What the server said about itself.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`.
    pub version: String,
    /// The database connected to.
    pub database: String,
    /// The user connected as.
    pub user: String,
    /// The server's address as it saw the connection.
    pub host: String,
    /// The server's port.
    pub port: i32,
    /// The guide's sizing rule, when the pool could exceed the server's connection limit.
    pub sizing_warning: Option<String>,
}

/// The outcome of a connection check, printable as the guide's report.
#[derive(Debug)]
pub struct CheckReport {
    /// The server's details, or why the connection failed.
    pub outcome: Result<ServerInfo, ConnectionFailure>,
    text: String,
}

impl CheckReport {
    /// Whether the connection worked (the exit code of `check`).
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.outcome.is_ok()
    }

    /// The report, as the guide prints it.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Connects to `url` with the configured pool settings and reports.
pub async fn run(config: &Config, url: &DatabaseUrl) -> CheckReport {
    let outcome = probe(config, url).await;
    let text = render(config, url, &outcome);
    CheckReport { outcome, text }
}

async fn probe(config: &Config, url: &DatabaseUrl) -> Result<ServerInfo, ConnectionFailure> {
    // One direct connection, not the pool: the pool retries refused connections until its
    // timeout, which would hide the cause behind a generic "timed out".
    let options = database::connect_options(url, &config.pool);
    let connect = sqlx::PgConnection::connect_with(&options);
    let mut connection = tokio::time::timeout(config.pool.timeout, connect)
        .await
        .map_err(|_| ConnectionFailure::new(&sqlx::Error::PoolTimedOut))?
        .map_err(|error| ConnectionFailure::new(&error))?;
    // Through the embedded server's Unix socket the server has no address for the session:
    // report the one it listens on, as tools reach it.
    let row = sqlx::query(
        "SELECT version(), current_database(), current_user::text, \
         coalesce(host(inet_server_addr()), $1), coalesce(inet_server_port(), $2)",
    )
    .bind(&url.host)
    .bind(i32::from(url.port))
    .fetch_one(&mut connection)
    .await
    .map_err(|error| ConnectionFailure::new(&error))?;
    let sizing_warning = ServerLimits::query(&mut connection)
        .await
        .map_err(|error| ConnectionFailure::new(&error))?
        .warning(&config.pool);
    let _ = connection.close().await;
    let version: String = row.get(0);
    Ok(ServerInfo {
        // The guide shows "PostgreSQL 16.1 on x86_64-pc-linux-gnu", without the compiler.
        version: version
            .split(", compiled by")
            .next()
            .unwrap_or(&version)
            .to_owned(),
        database: row.get(1),
        user: row.get(2),
        host: row.get(3),
        port: row.get(4),
        sizing_warning,
    })
}

fn render(
    config: &Config,
    url: &DatabaseUrl,
    outcome: &Result<ServerInfo, ConnectionFailure>,
) -> String {
    let pool = &config.pool;
    let mut out = String::new();
    let _ = writeln!(out, "{RULE}\nDatabase Connection Test\n{RULE}\n");
    let _ = writeln!(out, "Configuration:");
    let _ = writeln!(out, "  Environment: {}", config.environment);
    let _ = writeln!(out, "  Database URL: {}", url.masked());
    let _ = writeln!(out, "  Pool Size: {}", pool.size);
    let _ = writeln!(out, "  Max Overflow: {}", pool.max_overflow);
    let _ = writeln!(out, "  Pool Timeout: {}s", pool.timeout.as_secs());
    let _ = writeln!(out, "  Pool Recycle: {}s", pool.recycle.as_secs());
    let _ = writeln!(out, "\nTesting connection...");
    match outcome {
        Ok(info) => {
            let _ = writeln!(out, "✓ Connection successful!\n");
            let _ = writeln!(out, "Database Information:");
            let _ = writeln!(out, "  PostgreSQL Version: {}", info.version);
            let _ = writeln!(out, "  Database: {}", info.database);
            let _ = writeln!(out, "  User: {}", info.user);
            let _ = writeln!(out, "  Host: {}", info.host);
            let _ = writeln!(out, "  Port: {}", info.port);
            let _ = writeln!(out, "  Driver: {DRIVER}");
            let _ = writeln!(out, "  Pool Size: {}", pool.size);
            let _ = writeln!(out, "  Max Overflow: {}", pool.max_overflow);
            if let Some(warning) = &info.sizing_warning {
                let _ = writeln!(out, "\n⚠ Warning: {warning}");
            }
            let _ = writeln!(out, "\n{RULE}\n✓ Database is ready for use!\n{RULE}");
        }
        Err(failure) => {
            let _ = writeln!(out, "✗ Connection failed: {}", failure.kind.cause());
            let _ = writeln!(out, "  Error: {}", failure.message);
            let _ = writeln!(out, "\nSolutions:");
            for (number, remedy) in failure.kind.remedies(url).iter().enumerate() {
                let _ = writeln!(out, "  {}. {remedy}", number + 1);
            }
            let _ = writeln!(out, "\n{RULE}\n✗ Database is not ready!\n{RULE}");
        }
    }
    out
}
