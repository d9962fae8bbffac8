//! The dev database back to a known state, from the UI: `POST /api/database/reset`,
//! `GET /api/database/fixtures`, `POST /api/database/fixtures/{name}`. Admin routes (as the
//! server controls), refused outside development and testing and on an external server unless
//! allowed ([`crate::dev_data`]).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use super::access::AdminGranted;
use super::error::{ApiError, ErrorBody};
use crate::dev_data::DevDataError;
use crate::fixtures::FixtureError;
use crate::migrations::MigrationEntry;
use crate::monitor::EventKind;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/database/reset", post(reset_database))
        .route("/api/database/fixtures", get(list_fixtures))
        .route("/api/database/fixtures/{name}", post(load_fixture))
}

impl From<DevDataError> for ApiError {
    fn from(error: DevDataError) -> Self {
        match error {
            DevDataError::WrongEnvironment(_) | DevDataError::External(_) => {
                Self::Forbidden(error.to_string())
            }
            DevDataError::Fixture(FixtureError::Missing { .. }) => {
                Self::NotFound("Fixture not found")
            }
            DevDataError::Fixture(FixtureError::Statement { .. })
            | DevDataError::Recreate { .. } => Self::StateConflict(error.to_string()),
            DevDataError::Database(error) => error.into(),
            other => Self::internal(other),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FixtureList {
    /// Where fixtures are read from (`PGHARNESS_FIXTURES_DIR`).
    folder: String,
    /// `<name>.sql` files there, by name.
    fixtures: Vec<String>,
    /// Whether reset and load are allowed here.
    allowed: bool,
    /// Why not, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

/// The fixtures that can be loaded, and whether reset and load are allowed here.
#[utoipa::path(get, path = "/api/database/fixtures", tag = "database", responses(
    (status = 200, description = "Fixtures by name", body = FixtureList),
))]
pub async fn list_fixtures(
    State(context): State<ApiContext>,
) -> Result<Json<FixtureList>, ApiError> {
    let dev_data = &context.dev_data;
    let refused = dev_data.allowed().err().map(|error| error.to_string());
    Ok(Json(FixtureList {
        folder: dev_data.fixtures_dir().display().to_string(),
        fixtures: dev_data.fixtures().map_err(ApiError::internal)?,
        allowed: refused.is_none(),
        refused,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ResetDone {
    database: String,
    #[schema(value_type = Vec<Object>)]
    migrations_applied: Vec<MigrationEntry>,
}

/// Drop the application database, create it empty and apply the migrations. Every session
/// on it is closed. Development and testing only.
#[utoipa::path(post, path = "/api/database/reset", tag = "database", responses(
    (status = 200, description = "Reset and migrated", body = ResetDone),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "Not development or testing, an external server not allowed, or admin routes disabled"),
    (status = 409, description = "The server refused to drop or create the database"),
    (status = 503, description = "The database is unavailable"),
))]
pub async fn reset_database(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<Json<ResetDone>, ApiError> {
    let applied = context
        .dev_data
        .reset(&context.url, &context.database, &context.migrations)
        .await?;
    context.monitor.record(
        EventKind::DatabaseReset,
        format!(
            "database {} dropped, recreated and migrated ({} migration(s))",
            context.url.database,
            applied.len()
        ),
    );
    Ok(Json(ResetDone {
        database: context.url.database.clone(),
        migrations_applied: applied,
    }))
}

/// Apply the fixture `<fixtures>/<name>.sql` in one transaction. Development and testing only.
#[utoipa::path(post, path = "/api/database/fixtures/{name}", tag = "database",
    params(("name" = String, Path, description = "The fixture's file name without `.sql`")),
    responses(
        (status = 204, description = "Loaded"),
        (status = 401, description = "The admin token is missing or wrong"),
        (status = 403, description = "Not development or testing, an external server not allowed, or admin routes disabled"),
        (status = 404, description = "No such fixture (or a name no file can have)", body = ErrorBody),
        (status = 409, description = "A statement of the fixture failed (its line is named); nothing of it stays"),
        (status = 503, description = "The database is unavailable"),
    ))]
pub async fn load_fixture(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    context.dev_data.load(&context.database, &name).await?;
    context
        .monitor
        .record(EventKind::FixtureLoaded, format!("fixture {name} loaded"));
    Ok(axum::http::StatusCode::NO_CONTENT)
}
