//! `/api/connection` and `/api/database/{state,stop,start,restart}`: what the
//! UI's connection screen shows, and outage rehearsal for QA (embedded server only).

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use super::access::AdminGranted;
use super::error::ApiError;
use crate::config::PoolSettings;
use crate::database::PoolStats;
use crate::embedded::{EmbeddedServer, ServerError};
use crate::migrations::MigrationEntry;
use crate::monitor::EventKind;

/// Live facts are skipped, not waited for, when the database does not answer within this.
const LIVE_TIMEOUT: Duration = Duration::from_secs(2);

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/access", get(access))
        .route("/api/connection", get(connection))
        .route("/api/connection/reveal", post(reveal_connection_string))
        .route("/api/database/state", get(database_state))
        .route("/api/database/stop", post(stop_database))
        .route("/api/database/start", post(start_database))
        .route("/api/database/restart", post(restart_database))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolSettingsView {
    size: u32,
    max_overflow: u32,
    timeout_seconds: u64,
    recycle_seconds: u64,
    echo: bool,
}

impl From<&PoolSettings> for PoolSettingsView {
    fn from(settings: &PoolSettings) -> Self {
        Self {
            size: settings.size,
            max_overflow: settings.max_overflow,
            timeout_seconds: settings.timeout.as_secs(),
            recycle_seconds: settings.recycle.as_secs(),
            echo: settings.echo,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MigrationsView {
    #[schema(value_type = Vec<Object>)]
    applied: Vec<MigrationEntry>,
    #[schema(value_type = Vec<Object>)]
    pending: Vec<MigrationEntry>,
}

/// The connection screen. Passwords are never included.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionInfo {
    /// The guide's masked form, `host:port/database`.
    url: String,
    host: String,
    port: u16,
    database: String,
    user: String,
    /// `embedded` or `external`.
    mode: &'static str,
    data_directory: Option<String>,
    /// Whether the database answered just now; the fields below are null when it did not.
    reachable: bool,
    server_version: Option<String>,
    /// Sessions on this database (`pg_stat_activity`).
    active_connections: Option<i64>,
    migrations: Option<MigrationsView>,
    pool_settings: PoolSettingsView,
    #[schema(value_type = Object)]
    pool: PoolStats,
}

struct LiveFacts {
    server_version: String,
    active_connections: i64,
    migrations: MigrationsView,
}

async fn live_facts(context: &ApiContext) -> Result<LiveFacts, ApiError> {
    let (server_version, active_connections): (String, i64) = context
        .database
        .run(async |connection| {
            sqlx::query_as(
                "SELECT current_setting('server_version'),
                        (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())",
            )
            .fetch_one(connection)
            .await
        })
        .await?;
    let status = context
        .migrations
        .status(context.database.maintenance_pool())
        .await
        .map_err(ApiError::internal)?;
    let (applied, pending) = status
        .migrations
        .into_iter()
        .partition(|entry| entry.applied_at.is_some());
    Ok(LiveFacts {
        server_version,
        active_connections,
        migrations: MigrationsView { applied, pending },
    })
}

/// Connection details, pool settings and usage, server facts and migrations.
#[utoipa::path(get, path = "/api/connection", tag = "database", responses(
    (status = 200, description = "Connection details (live facts null while the database is down)", body = ConnectionInfo),
))]
pub async fn connection(State(context): State<ApiContext>) -> Json<ConnectionInfo> {
    let live = tokio::time::timeout(LIVE_TIMEOUT, live_facts(&context))
        .await
        .ok()
        .and_then(Result::ok);
    let url = &context.url;
    Json(ConnectionInfo {
        url: url.masked(),
        host: url.host.clone(),
        port: url.port,
        database: url.database.clone(),
        user: url.username.clone(),
        mode: if context.server.is_some() {
            "embedded"
        } else {
            "external"
        },
        data_directory: context
            .server
            .as_ref()
            .map(|server| server.data_dir().display().to_string()),
        reachable: live.is_some(),
        server_version: live.as_ref().map(|facts| facts.server_version.clone()),
        active_connections: live.as_ref().map(|facts| facts.active_connections),
        migrations: live.map(|facts| facts.migrations),
        pool_settings: context.database.settings().into(),
        pool: context.database.stats(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Access {
    /// Whether this client may use the admin routes (reveal, database control, fixtures,
    /// statistics reset, internal statements).
    admin: bool,
    /// Why not, and how to get access.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// What this client may do: the UI disables the admin buttons, with the reason, when it may not.
#[utoipa::path(get, path = "/api/access", tag = "database", responses(
    (status = 200, description = "Whether the admin routes are open to this client", body = Access),
))]
pub async fn access(State(context): State<ApiContext>, headers: HeaderMap) -> Json<Access> {
    Json(match context.access.admin_status(&headers) {
        Ok(()) => Access {
            admin: true,
            detail: None,
        },
        Err(refusal) => Access {
            admin: false,
            detail: Some(refusal.to_string()),
        },
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionString {
    /// `postgresql://user:password@host:port/database`, for psql.
    url: String,
}

/// The full connection string, password included: only on an explicit request (the UI's
/// "copy" button), never in any other answer or log. A POST, so that no link, prefetch or
/// cache fetches it.
#[utoipa::path(post, path = "/api/connection/reveal", tag = "database", responses(
    (status = 200, description = "The connection string with its password", body = ConnectionString),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "Beyond loopback with no PGHARNESS_ADMIN_TOKEN set: admin routes are disabled"),
))]
pub async fn reveal_connection_string(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Json<ConnectionString> {
    Json(ConnectionString {
        url: context.url.expose_url(),
    })
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseState {
    /// `running`, `stopped`, or `recovering` (it exited unexpectedly and is being restarted).
    status: &'static str,
    /// Why it is recovering.
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

fn embedded(context: &ApiContext) -> Result<&EmbeddedServer, ApiError> {
    context.server.as_deref().ok_or_else(|| {
        ApiError::Forbidden(format!(
            "database control works only with the embedded server; this API uses the external \
             server at {}",
            context.url.masked()
        ))
    })
}

fn control_error(error: ServerError) -> ApiError {
    match error {
        ServerError::NotOwner { .. } => ApiError::Forbidden(error.to_string()),
        other => ApiError::internal(other),
    }
}

fn state(server: &EmbeddedServer) -> Json<DatabaseState> {
    let outage = server.outage();
    Json(DatabaseState {
        status: match (&outage, server.is_running()) {
            (Some(_), _) => "recovering",
            (None, true) => "running",
            (None, false) => "stopped",
        },
        detail: outage,
    })
}

/// Whether the embedded server runs: what Stop and Start would change.
#[utoipa::path(get, path = "/api/database/state", tag = "database", responses(
    (status = 200, description = "Running, stopped or recovering", body = DatabaseState),
    (status = 403, description = "External server: it is not controlled from here"),
))]
pub async fn database_state(
    State(context): State<ApiContext>,
) -> Result<Json<DatabaseState>, ApiError> {
    Ok(state(embedded(&context)?))
}

/// Stop the embedded server (fast shutdown), e.g. to rehearse an outage.
#[utoipa::path(post, path = "/api/database/stop", tag = "database", responses(
    (status = 200, description = "Stopped", body = DatabaseState),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "External server, a server owned by another process, or admin routes disabled beyond loopback"),
))]
pub async fn stop_database(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<Json<DatabaseState>, ApiError> {
    let server = embedded(&context)?;
    server.pause().await.map_err(control_error)?;
    context.monitor.record(
        EventKind::ServerStopped,
        "the embedded server was stopped on request",
    );
    Ok(state(server))
}

/// Start the embedded server again, on the same port.
#[utoipa::path(post, path = "/api/database/start", tag = "database", responses(
    (status = 200, description = "Running", body = DatabaseState),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "External server, a server owned by another process, or admin routes disabled beyond loopback"),
))]
pub async fn start_database(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<Json<DatabaseState>, ApiError> {
    let server = embedded(&context)?;
    server.resume().await.map_err(control_error)?;
    context.monitor.record(
        EventKind::ServerStarted,
        "the embedded server was started on request",
    );
    Ok(state(server))
}

/// Stop and start the embedded server.
#[utoipa::path(post, path = "/api/database/restart", tag = "database", responses(
    (status = 200, description = "Running", body = DatabaseState),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "External server, a server owned by another process, or admin routes disabled beyond loopback"),
))]
pub async fn restart_database(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<Json<DatabaseState>, ApiError> {
    let server = embedded(&context)?;
    server.pause().await.map_err(control_error)?;
    server.resume().await.map_err(control_error)?;
    context.monitor.record(
        EventKind::ServerRestarted,
        "the embedded server was restarted on request",
    );
    Ok(state(server))
}
