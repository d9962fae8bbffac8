//! Whether the database answers: `SELECT 1` through the pool with a deadline, for `/health` and
//! the sampler.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::database::{Database, DatabaseError};
use crate::embedded::EmbeddedServer;

/// A database that does not answer within this is reported down: health never hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The result of one probe.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseCheck {
    /// Round trip of `SELECT 1`, when it answered.
    pub latency_ms: Option<f64>,
    /// Why it is unhealthy or degraded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `SELECT 1` through `database`'s pool; a failure's reason completed by what the embedded
/// `server`'s supervisor knows.
pub async fn probe_database(database: &Database, server: Option<&EmbeddedServer>) -> DatabaseCheck {
    let started = Instant::now();
    let probe = database.run(async |connection| {
        sqlx::query("SELECT 1")
            .execute(connection)
            .await
            .map(|_| ())
    });
    let reason = match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => {
            return DatabaseCheck {
                latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
                reason: None,
            };
        }
        Ok(Err(DatabaseError::Connection(failure))) => failure.kind.cause().to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
    };
    // What the server's supervisor knows says more than the refused connection.
    let reason = match server.and_then(EmbeddedServer::outage) {
        Some(outage) => format!("{reason}: {outage}"),
        None => reason,
    };
    DatabaseCheck {
        latency_ms: None,
        reason: Some(reason),
    }
}
