//! `/api/queries/slow`: the slowest statements on the application's database
//! (`pg_stat_statements`), the application's own by default, and resetting those statistics.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use super::ApiContext;
use super::access::AdminGranted;
use super::error::{ApiError, ApiQuery};

/// What pgharness itself runs, not the application: schema changes and other utility
/// statements (migrations, `CREATE EXTENSION`, transaction control), the migrations table, the
/// catalog and statistics views (health, connection and database screens), and the pool's
/// `SELECT 1` probe. A leading comment does not hide a statement's kind.
const INTERNAL_STATEMENT: &str = r"(query ~* '^(\s+|--[^\n]*(\n|$)|/\*([^*]|\*[^/])*\*/)*(create|alter|drop|comment|grant|revoke|set|reset|show|begin|start|commit|rollback|savepoint|release|lock|truncate|vacuum|analyze|discard|deallocate|listen|unlisten|notify)\y'
    OR query ~* '(_sqlx_migrations|pg_stat_|pg_catalog\.|pg_database|pg_extension|pg_class|pg_namespace|pg_locks|pg_advisory|pg_try_advisory|current_setting|current_database|pg_backend_pid|to_regclass|pg_total_relation_size|pg_database_size)'
    OR query ~* '^\s*select \$1\s*;?\s*$')";

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/queries/slow", get(slow_queries))
        .route("/api/queries/slow/reset", post(reset_statistics))
}

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SlowQuery {
    pub(super) query: String,
    calls: i64,
    mean_ms: f64,
    pub(super) max_ms: f64,
    total_ms: f64,
    /// Run by pgharness itself (migrations, health, these screens), not the application.
    internal: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlowQueries {
    /// False when the server does not have `pg_stat_statements`.
    available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    queries: Vec<SlowQuery>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlowQueryFilter {
    /// Also pgharness's own statements (migrations, health checks, these screens); an admin
    /// route's right: they hold utility statements verbatim.
    #[serde(default)]
    include_internal: bool,
}

/// Why `pg_stat_statements` cannot be read, or `None` when it can.
async fn unavailable(connection: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    let installed: bool =
        sqlx::query_scalar("SELECT to_regclass('pg_stat_statements') IS NOT NULL")
            .fetch_one(&mut *connection)
            .await?;
    Ok((!installed).then(|| {
        "pg_stat_statements is not installed on this server: add it to \
         shared_preload_libraries and run CREATE EXTENSION pg_stat_statements"
            .to_owned()
    }))
}

/// The `limit` slowest statements by mean time on this database, optionally only those whose
/// slowest run took at least `at_least_ms`.
pub(super) async fn slowest(
    connection: &mut PgConnection,
    include_internal: bool,
    at_least_ms: f64,
    limit: i64,
) -> Result<Vec<SlowQuery>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT query, calls, mean_exec_time AS mean_ms, max_exec_time AS max_ms,
                total_exec_time AS total_ms, {INTERNAL_STATEMENT} AS internal
           FROM pg_stat_statements
          WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND ($1 OR NOT {INTERNAL_STATEMENT})
            AND max_exec_time >= $2
          ORDER BY mean_exec_time DESC
          LIMIT $3"
    )))
    .bind(include_internal)
    .bind(at_least_ms)
    .bind(limit)
    .fetch_all(connection)
    .await
}

/// The ten statements with the highest mean time on this database (`pg_stat_statements`): the
/// application's, unless `include_internal` asks for pgharness's own too.
#[utoipa::path(get, path = "/api/queries/slow", tag = "database", params(SlowQueryFilter), responses(
    (status = 200, description = "Slowest statements, or why they are not available", body = SlowQueries),
    (status = 401, description = "include_internal=true without the admin token"),
    (status = 403, description = "include_internal=true beyond loopback with no PGHARNESS_ADMIN_TOKEN set"),
    (status = 422, description = "include_internal is not true or false"),
    (status = 503, description = "The database is unavailable"),
))]
pub async fn slow_queries(
    State(context): State<ApiContext>,
    headers: HeaderMap,
    ApiQuery(filter): ApiQuery<SlowQueryFilter>,
) -> Result<Json<SlowQueries>, ApiError> {
    // pgharness's own statements include utility ones verbatim (`CREATE ROLE … PASSWORD`).
    if filter.include_internal {
        context.access.admin_status(&headers)?;
    }
    // A statement the server refuses (installed but not preloaded) is an answer, not a lost
    // connection: it is returned inside `Ok` so that only a lost connection is retried.
    let answer = context
        .database
        .run(async |connection| {
            if let Some(reason) = unavailable(&mut *connection).await? {
                return Ok(Err(reason));
            }
            match slowest(&mut *connection, filter.include_internal, 0.0, 10).await {
                Ok(queries) => Ok(Ok(queries)),
                Err(sqlx::Error::Database(error)) => Ok(Err(format!(
                    "pg_stat_statements is not usable: {}",
                    error.message()
                ))),
                Err(error) => Err(error),
            }
        })
        .await?;
    Ok(Json(match answer {
        Ok(queries) => SlowQueries {
            available: true,
            reason: None,
            queries,
        },
        Err(reason) => SlowQueries {
            available: false,
            reason: Some(reason),
            queries: Vec::new(),
        },
    }))
}

/// Forget the statement statistics of every database on the server
/// (`pg_stat_statements_reset()`), to measure from now on.
#[utoipa::path(post, path = "/api/queries/slow/reset", tag = "database", responses(
    (status = 204, description = "Statistics reset"),
    (status = 401, description = "The admin token is missing or wrong"),
    (status = 403, description = "Admin routes disabled beyond loopback"),
    (status = 409, description = "pg_stat_statements is not installed, or this user may not reset it"),
    (status = 503, description = "The database is unavailable"),
))]
pub async fn reset_statistics(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
) -> Result<axum::http::StatusCode, ApiError> {
    let reset = context
        .database
        .run(async |connection| {
            if let Some(reason) = unavailable(&mut *connection).await? {
                return Ok(Err(ApiError::StateConflict(reason)));
            }
            Ok(Ok(sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&mut *connection)
                .await))
        })
        .await??;
    match reset {
        Ok(_) => {
            context.monitor.record(
                super::monitor::EventKind::StatisticsReset,
                "statement statistics reset",
            );
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => Err(
            ApiError::StateConflict(format!("cannot reset the statistics: {}", error.message())),
        ),
        Err(error) => Err(error.into()),
    }
}
