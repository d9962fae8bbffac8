//! `GET /health` (the guide's report), `/health/live` and `/health/ready` for orchestrators.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use super::error::RETRY_AFTER_SECONDS;
use crate::database::PoolStats;
use crate::monitor::{DatabaseCheck, probe_database};

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

/// The guide's health body, plus the database check's latency and the pool's usage.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy`; `degraded` (200) when the database answers but writes fail for lack of disk
    /// space (`database.reason` says so); `unhealthy` (503) when it does not answer.
    status: &'static str,
    environment: String,
    version: &'static str,
    checks: Checks,
    database: DatabaseCheck,
    #[schema(value_type = Object)]
    pool: PoolStats,
}

/// `SELECT 1` through the pool: its latency, or why it failed.
async fn check_database(context: &ApiContext) -> DatabaseCheck {
    probe_database(&context.database, context.server.as_deref()).await
}

/// The guide's health report: 200 when the database answers (degraded when writes fail for lack
/// of disk space), 503 when it does not.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Healthy, or degraded: the disk holding the data directory is full", body = Health),
    (status = 503, description = "The database is down or does not answer within 2 s", body = Health),
))]
pub async fn health(State(context): State<ApiContext>) -> Response {
    let mut database = check_database(&context).await;
    let healthy = database.latency_ms.is_some();
    let degraded = healthy && context.monitor.disk_full_lately();
    if degraded {
        database.reason = Some(super::ApiError::DiskFull.to_string());
    }
    let body = Health {
        status: match (healthy, degraded) {
            (false, _) => "unhealthy",
            (true, true) => "degraded",
            (true, false) => "healthy",
        },
        environment: context.environment.to_string(),
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks {
            database: if healthy { "healthy" } else { "unhealthy" },
        },
        database,
        pool: context.database.stats(),
    };
    if healthy {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)];
        (StatusCode::SERVICE_UNAVAILABLE, retry, Json(body)).into_response()
    }
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
pub async fn ready(State(context): State<ApiContext>) -> Response {
    match check_database(&context).await.reason {
        None => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, RETRY_AFTER_SECONDS)],
            Json(serde_json::json!({ "status": "not ready", "detail": reason })),
        )
            .into_response(),
    }
}
