//! `/api/queries/slow`: the slowest statements on the application's database
//! (`pg_stat_statements`), the application's own by default, and resetting those statistics;
//! `/api/queries/explain`: one statement's plan.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Connection as _, PgConnection};

use super::ApiContext;
use super::access::AdminGranted;
use super::error::{ApiError, ApiJson, ApiQuery, ErrorBody, FieldError, JsonShape, object_at};
use crate::monitor::{EventKind, SlowQuery, slowest};

/// The longest an explained statement may run (`EXPLAIN ANALYZE` runs it).
const EXPLAIN_TIMEOUT: &str = "10s";

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/api/queries/slow", get(slow_queries))
        .route("/api/queries/slow/reset", post(reset_statistics))
        .route("/api/queries/explain", post(explain))
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
            context
                .monitor
                .record(EventKind::StatisticsReset, "statement statistics reset");
            Ok(axum::http::StatusCode::NO_CONTENT)
        }
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("42501") => Err(
            ApiError::StateConflict(format!("cannot reset the statistics: {}", error.message())),
        ),
        Err(error) => Err(error.into()),
    }
}

/// The body of an explain.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExplainRequest {
    /// One statement, with its values: a `$1`-style parameter is refused (there is no value to
    /// plan with).
    query: String,
    /// Run it (`EXPLAIN ANALYZE`), in a transaction rolled back afterwards, for at most 10 s.
    #[serde(default)]
    analyze: bool,
}

impl JsonShape for ExplainRequest {
    fn misshapen(value: &serde_json::Value, location: &[serde_json::Value]) -> Option<FieldError> {
        object_at(value, location)
    }
}

/// A statement's plan, as `EXPLAIN` prints it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    /// One line per line of the plan.
    lines: Vec<String>,
}

/// Whether `query` holds a `$1`-style parameter, as `pg_stat_statements` writes its constants.
fn has_parameter(query: &str) -> bool {
    query
        .as_bytes()
        .windows(2)
        .any(|pair| pair[0] == b'$' && pair[1].is_ascii_digit())
}

fn refused_query(message: String) -> ApiError {
    ApiError::fields(vec![FieldError::new(
        &[json!("body"), json!("query")],
        message,
        "value_error",
    )])
}

/// The plan of one statement (`EXPLAIN`); with `analyze`, run (`EXPLAIN ANALYZE`) in a
/// transaction that is rolled back, so that a write changes nothing.
#[utoipa::path(post, path = "/api/queries/explain", tag = "database",
    request_body = ExplainRequest,
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 401, description = "The admin token is missing or wrong"),
        (status = 403, description = "Admin routes disabled beyond loopback"),
        (status = 422, description = "A `$1`-style parameter, or a statement PostgreSQL refuses to explain (its message in the detail)", body = ErrorBody),
        (status = 503, description = "The database is unavailable"),
    ))]
pub async fn explain(
    _admin: AdminGranted,
    State(context): State<ApiContext>,
    ApiJson(body): ApiJson<ExplainRequest>,
) -> Result<Json<Plan>, ApiError> {
    if has_parameter(&body.query) {
        return Err(refused_query(
            "the statement has `$1`-style parameters, as pg_stat_statements records it: put \
             values in their place to see its plan"
                .to_owned(),
        ));
    }
    let options = if body.analyze { "ANALYZE" } else { "COSTS" };
    let statement = format!("EXPLAIN ({options}) {}", body.query);
    // A refusal is an answer inside `Ok`, so that only a lost connection is retried.
    let plan = context
        .database
        .run(async |connection| {
            let mut transaction = connection.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL statement_timeout = '{EXPLAIN_TIMEOUT}'"
            )))
            .execute(&mut *transaction)
            .await?;
            // Prepared, so that the server refuses a second statement after the first.
            let plan = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(statement.clone()))
                .persistent(false)
                .fetch_all(&mut *transaction)
                .await;
            transaction.rollback().await?;
            match plan {
                Err(sqlx::Error::Database(error)) => Ok(Err(error.message().to_owned())),
                other => other.map(Ok),
            }
        })
        .await?;
    match plan {
        Ok(lines) => Ok(Json(Plan { lines })),
        Err(message) => Err(refused_query(format!(
            "PostgreSQL cannot explain it: {message}"
        ))),
    }
}
