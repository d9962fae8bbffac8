//! Named snapshots of the dev database, from the UI: `GET /api/database/snapshots`,
//! `POST /api/database/snapshots`, `POST /api/database/snapshots/{name}/restore`,
//! `DELETE /api/database/snapshots/{name}`. Admin routes, refused where reset is
//! ([`crate::dev_data::snapshots`]). A save or a restore answers once done; the snapshot's
//! ready copy is made after, in the background, other snapshot operations waiting for it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::warn;

use super::ApiContext;
use super::access::AdminGranted;
use super::error::{ApiError, ApiJson, ErrorBody, FieldError, JsonShape, object_at};
use crate::database::is_connection_lost;
use crate::dev_data::snapshots::{ReadyCopyDue, Restored, Snapshot, SnapshotError, Snapshots};
use crate::monitor::EventKind;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route(
            "/api/database/snapshots",
            get(list_snapshots).post(save_snapshot),
        )
        .route("/api/database/snapshots/{name}", delete(delete_snapshot))
        .route(
            "/api/database/snapshots/{name}/restore",
            post(restore_snapshot),
        )
}

/// A name given in the request body (`POST`): an invalid one is `["body", "name"]`.
impl From<SnapshotError> for ApiError {
    fn from(error: SnapshotError) -> Self {
        answer(error, "body")
    }
}

/// What a snapshot step's failure answers. An invalid name is located where the request gave
/// it (`["body", "name"]` or `["path", "name"]`), as every route's validation errors are.
fn answer(error: SnapshotError, name_given_in: &'static str) -> ApiError {
    match error {
        SnapshotError::Refused(refused) => refused.into(),
        SnapshotError::InvalidName(_) => ApiError::fields(vec![FieldError::new(
            &[json!(name_given_in), json!("name")],
            error.to_string(),
            "value_error",
        )]),
        SnapshotError::NotFound(_) => ApiError::NotFound("Snapshot not found"),
        SnapshotError::Server { ref source, .. } if is_connection_lost(source) => {
            ApiError::Unavailable(error.to_string())
        }
        SnapshotError::Exists(_) | SnapshotError::Server { .. } => {
            ApiError::StateConflict(error.to_string())
        }
        SnapshotError::Migration(_) => ApiError::internal(error),
    }
}

/// Makes the snapshot's ready copy in the background, once the request is answered.
fn make_in_background(ready_copy: ReadyCopyDue) {
    tokio::spawn(async move {
        let snapshot = ready_copy.snapshot().to_owned();
        if let Err(error) = ready_copy.make().await {
            warn!(
                snapshot,
                "{error}: its next restore copies the snapshot first, and makes the ready copy again"
            );
        }
    });
}

/// The snapshots, and whether saving, restoring and deleting them is allowed here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SnapshotList {
    #[serde(flatten)]
    listing: Snapshots,
    /// Whether save, restore and delete are allowed here.
    allowed: bool,
    /// Why not, when they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
}

/// Every snapshot by name, with its size (its ready copy for a restore included), when it was
/// saved and its migration; their total size.
#[utoipa::path(get, path = "/api/database/snapshots", tag = "database", responses(
    (status = 200, description = "Snapshots by name", body = SnapshotList),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "Admin routes disabled"),
    (status = 503, description = "The database server is unavailable (with Retry-After)"),
))]
pub async fn list_snapshots(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<Json<SnapshotList>, ApiError> {
    let refused = context
        .dev_data
        .allowed()
        .err()
        .map(|error| error.to_string());
    Ok(Json(SnapshotList {
        listing: context.dev_data.snapshots(&context.url).await?,
        allowed: refused.is_none(),
        refused,
    }))
}

/// The body of a save.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewSnapshot {
    /// 1 to 40 of a-z, 0-9, `_`, `-`, starting with a letter or a digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,39}$")]
    name: String,
}

impl JsonShape for NewSnapshot {
    fn misshapen(value: &serde_json::Value, location: &[serde_json::Value]) -> Option<FieldError> {
        object_at(value, location)
    }
}

/// Save the application database as a named snapshot. Its sessions are ended while it is
/// copied: requests meanwhile get 503. Answers once saved; the snapshot's ready copy for an
/// instant restore is made after. Development and testing only.
#[utoipa::path(post, path = "/api/database/snapshots", tag = "database",
    request_body = NewSnapshot,
    responses(
        (status = 201, description = "Saved", body = Snapshot),
        (status = 401, description = "The admin token is missing or wrong"),
        (status = 403, description = "Not development or testing, an external server not allowed, or admin routes disabled"),
        (status = 409, description = "A snapshot of that name exists, or the server refused the copy", body = ErrorBody),
        (status = 422, description = "Not a valid snapshot name (the rule is in the detail)", body = ErrorBody),
        (status = 503, description = "The database is unavailable (with Retry-After)"),
    ))]
pub async fn save_snapshot(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
    ApiJson(body): ApiJson<NewSnapshot>,
) -> Result<(StatusCode, Json<Snapshot>), ApiError> {
    let (snapshot, ready_copy) = context
        .dev_data
        .save_snapshot(
            &context.url,
            &context.database,
            &context.migrations,
            &body.name,
        )
        .await?;
    make_in_background(ready_copy);
    context.monitor.record(
        EventKind::SnapshotSaved,
        format!("snapshot {} saved", snapshot.name),
    );
    Ok((StatusCode::CREATED, Json(snapshot)))
}

/// The answer to a restore.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RestoreDone {
    #[serde(flatten)]
    restored: Restored,
    /// Set when the snapshot was at another migration than this code: what it means and what
    /// to do (`migrate` applies the newer migrations).
    #[serde(skip_serializing_if = "Option::is_none")]
    notice: Option<String>,
}

/// The options of a restore.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct RestoreOptions {
    /// Apply this code's migrations newer than the snapshot once it is restored.
    #[serde(default)]
    migrate: bool,
}

impl JsonShape for RestoreOptions {
    fn misshapen(value: &serde_json::Value, location: &[serde_json::Value]) -> Option<FieldError> {
        object_at(value, location)
    }
}

/// Replace the application database with a snapshot (which stays). Every session on it is
/// closed; requests meanwhile get 503. Answers once restored; the snapshot's ready copy for the
/// next restore is made after. Development and testing only.
#[utoipa::path(post, path = "/api/database/snapshots/{name}/restore", tag = "database",
    params(("name" = String, Path, description = "The snapshot's name")),
    request_body = RestoreOptions,
    responses(
        (status = 200, description = "Restored; `notice` says when it was at another migration", body = RestoreDone),
        (status = 401, description = "The admin token is missing or wrong"),
        (status = 403, description = "Not development or testing, an external server not allowed, or admin routes disabled"),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 409, description = "The server refused a step; the database is as it was", body = ErrorBody),
        (status = 422, description = "Not a valid snapshot name", body = ErrorBody),
        (status = 503, description = "The database is unavailable (with Retry-After)"),
    ))]
pub async fn restore_snapshot(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
    Path(name): Path<String>,
    ApiJson(options): ApiJson<RestoreOptions>,
) -> Result<Json<RestoreDone>, ApiError> {
    let (restored, ready_copy) = context
        .dev_data
        .restore_snapshot(
            &context.url,
            &context.database,
            &context.migrations,
            &name,
            options.migrate,
        )
        .await
        .map_err(|error| answer(error, "path"))?;
    make_in_background(ready_copy);
    context.monitor.record(
        EventKind::SnapshotRestored,
        format!("snapshot {name} restored into {}", context.url.database),
    );
    Ok(Json(RestoreDone {
        notice: restored.notice(),
        restored,
    }))
}

/// Delete a snapshot. Development and testing only.
#[utoipa::path(delete, path = "/api/database/snapshots/{name}", tag = "database",
    params(("name" = String, Path, description = "The snapshot's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "The admin token is missing or wrong"),
        (status = 403, description = "Not development or testing, an external server not allowed, or admin routes disabled"),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 422, description = "Not a valid snapshot name", body = ErrorBody),
    ))]
pub async fn delete_snapshot(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    context
        .dev_data
        .delete_snapshot(&context.url, &name)
        .await
        .map_err(|error| answer(error, "path"))?;
    Ok(StatusCode::NO_CONTENT)
}
