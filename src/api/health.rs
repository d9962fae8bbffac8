//! `GET /health` (the guide's report), `/health/live` and `/health/ready` for orchestrators.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use crate::database::{DatabaseError, PoolStats};

/// A database that does not answer within this is reported down: health never hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Checks {
    /// `healthy` or `unhealthy`.
    database: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseCheck {
    /// Round trip of `SELECT 1`, when it answered.
    latency_ms: Option<f64>,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// The guide's health body, plus the database check's latency and the pool's usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    status: &'static str,
    environment: String,
    version: &'static str,
    checks: Checks,
    database: DatabaseCheck,
    #[schema(value_type = Object)]
    pool: PoolStats,
}

async fn check_database(context: &ApiContext) -> Result<f64, String> {
    let started = Instant::now();
    let probe = async {
        let mut connection = context.database.acquire().await?;
        sqlx::query("SELECT 1")
            .execute(&mut *connection)
            .await
            .map_err(DatabaseError::Query)?;
        Ok::<_, DatabaseError>(())
    };
    match tokio::time::timeout(CHECK_TIMEOUT, probe).await {
        Ok(Ok(())) => Ok(started.elapsed().as_secs_f64() * 1000.0),
        Ok(Err(DatabaseError::Connection(failure))) => Err(failure.kind.cause().to_owned()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} s", CHECK_TIMEOUT.as_secs())),
    }
}

/// The guide's health report: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Healthy", body = Health),
    (status = 503, description = "The database is down or does not answer within 2 s", body = Health),
))]
pub async fn health(State(context): State<ApiContext>) -> (StatusCode, Json<Health>) {
    let check = check_database(&context).await;
    let healthy = check.is_ok();
    let body = Health {
        status: if healthy { "healthy" } else { "unhealthy" },
        environment: context.environment.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks {
            database: if healthy { "healthy" } else { "unhealthy" },
        },
        database: match check {
            Ok(latency) => DatabaseCheck {
                latency_ms: Some(latency),
                reason: None,
            },
            Err(reason) => DatabaseCheck {
                latency_ms: None,
                reason: Some(reason),
            },
        },
        pool: context.database.stats(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Liveness: the process answers (the database is not consulted).
#[utoipa::path(get, path = "/health/live", tag = "health", responses(
    (status = 200, description = "The API process is alive"),
))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

/// Readiness: the database answers, so requests can be served.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "The database is not reachable"),
))]
pub async fn ready(State(context): State<ApiContext>) -> (StatusCode, Json<serde_json::Value>) {
    match check_database(&context).await {
        Ok(_) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready" })),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not ready", "detail": reason })),
        ),
    }
}
