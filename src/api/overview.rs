//! `GET /api/database/overview`: the Database screen. The application database's size, its
//! tables with estimated rows and sizes, and the sessions connected to it.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::ApiContext;
use super::error::ApiError;

/// Long statements are cut to this many characters.
const QUERY_SHOWN: i32 = 500;

pub fn router() -> Router<ApiContext> {
    Router::new().route("/api/database/overview", get(overview))
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TableView {
    schema: String,
    name: String,
    /// The planner's estimate (`reltuples`); -1 before the table was first analysed.
    estimated_rows: i64,
    /// Table, indexes and TOAST.
    total_bytes: i64,
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SessionView {
    pid: i32,
    application_name: String,
    /// `active`, `idle`, `idle in transaction`, …
    state: Option<String>,
    /// The running (or last) statement, cut to 500 characters.
    query: Option<String>,
    /// Seconds since that statement started.
    duration_seconds: Option<f64>,
    /// This screen's own session.
    current: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseOverview {
    database: String,
    size_bytes: i64,
    tables: Vec<TableView>,
    sessions: Vec<SessionView>,
}

/// Size, tables (estimated rows, sizes) and current sessions of the application database.
#[utoipa::path(get, path = "/api/database/overview", tag = "database", responses(
    (status = 200, description = "The database at a glance", body = DatabaseOverview),
    (status = 503, description = "The database is unavailable"),
))]
pub async fn overview(
    State(context): State<ApiContext>,
) -> Result<Json<DatabaseOverview>, ApiError> {
    let (database, size_bytes, tables, sessions) = context
        .database
        .run(async |connection| {
            let (database, size_bytes): (String, i64) = sqlx::query_as(
                "SELECT current_database()::text, pg_database_size(current_database())",
            )
            .fetch_one(&mut *connection)
            .await?;
            let tables = sqlx::query_as(
                "SELECT n.nspname::text AS schema, c.relname::text AS name,
                        c.reltuples::bigint AS estimated_rows,
                        pg_total_relation_size(c.oid) AS total_bytes
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r', 'p')
                    AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg_toast%'
                  ORDER BY total_bytes DESC, schema, name",
            )
            .fetch_all(&mut *connection)
            .await?;
            let sessions = sqlx::query_as(
                "SELECT pid, application_name, state, left(query, $1) AS query,
                        extract(epoch FROM clock_timestamp() - query_start)::float8
                          AS duration_seconds,
                        pid = pg_backend_pid() AS current
                   FROM pg_stat_activity
                  WHERE datname = current_database()
                  ORDER BY backend_start",
            )
            .bind(QUERY_SHOWN)
            .fetch_all(&mut *connection)
            .await?;
            Ok((database, size_bytes, tables, sessions))
        })
        .await?;
    Ok(Json(DatabaseOverview {
        database,
        size_bytes,
        tables,
        sessions,
    }))
}
