//! `GET /api/database/overview`: the Database screen. The application database's size, its
//! tables with estimated rows and sizes, and the sessions connected to it: the application's,
//! and pgharness's own when asked for.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::ApiContext;
use super::error::{ApiError, ApiQuery};
use crate::monitor::INTERNAL_STATEMENT;

/// Long statements are cut to this many characters.
const QUERY_SHOWN: i32 = 500;

/// A session of pgharness's own: its pool's name (`crate::database::connect_options`) and one of
/// its own statements, or none yet. The application's requests on that pool are not its own.
fn internal_session() -> String {
    format!("(application_name = 'pgharness' AND (query = '' OR {INTERNAL_STATEMENT}))")
}

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
    /// One of pgharness's own: its connection (`application_name` `pgharness`) on one of its
    /// own statements (health checks, these screens, migrations) or none yet.
    internal: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Also pgharness's own sessions (health checks, these screens, migrations); an admin
    /// route's right, as for the slow statements: a migration's statement is shown verbatim.
    #[serde(default)]
    include_internal: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DatabaseOverview {
    database: String,
    size_bytes: i64,
    tables: Vec<TableView>,
    sessions: Vec<SessionView>,
}

/// Size, tables (estimated rows, sizes) and current sessions of the application database: the
/// application's, unless `include_internal` asks for pgharness's own too.
#[utoipa::path(get, path = "/api/database/overview", tag = "database", params(SessionFilter), responses(
    (status = 200, description = "The database at a glance", body = DatabaseOverview),
    (status = 401, description = "include_internal=true without the admin token"),
    (status = 403, description = "include_internal=true beyond loopback with no PGHARNESS_ADMIN_TOKEN set"),
    (status = 422, description = "include_internal is not true or false"),
    (status = 503, description = "The database is unavailable"),
))]
pub async fn overview(
    State(context): State<ApiContext>,
    headers: HeaderMap,
    ApiQuery(filter): ApiQuery<SessionFilter>,
) -> Result<Json<DatabaseOverview>, ApiError> {
    if filter.include_internal {
        context.access.admin_status(&headers)?;
    }
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
            let internal = internal_session();
            let sessions = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT pid, application_name, state, left(query, $1) AS query,
                        extract(epoch FROM clock_timestamp() - query_start)::float8
                          AS duration_seconds,
                        pid = pg_backend_pid() AS current, {internal} AS internal
                   FROM pg_stat_activity
                  WHERE datname = current_database() AND ($2 OR NOT {internal})
                  ORDER BY backend_start"
            )))
            .bind(QUERY_SHOWN)
            .bind(filter.include_internal)
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
