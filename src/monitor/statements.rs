//! The slowest statements on the application's database (`pg_stat_statements`), the
//! application's own told apart from pgharness's: for the connection screen and the sampler's
//! slow-statement events.

use serde::Serialize;
use sqlx::PgConnection;

/// What pgharness itself runs, not the application: schema changes and other utility
/// statements (migrations, `CREATE EXTENSION`, transaction control), the migrations table, the
/// catalog and statistics views (health, connection and database screens), and the pool's
/// `SELECT 1` probe (normalised by `pg_stat_statements`, or verbatim in `pg_stat_activity`). A
/// leading comment does not hide a statement's kind. An SQL condition on a column `query`.
pub(crate) const INTERNAL_STATEMENT: &str = r"(query ~* '^(\s+|--[^\n]*(\n|$)|/\*([^*]|\*[^/])*\*/)*(create|alter|drop|comment|grant|revoke|set|reset|show|begin|start|commit|rollback|savepoint|release|lock|truncate|vacuum|analyze|discard|deallocate|listen|unlisten|notify)\y'
    OR query ~* '(_sqlx_migrations|pg_stat_|pg_catalog\.|pg_database|pg_extension|pg_class|pg_namespace|pg_locks|pg_advisory|pg_try_advisory|current_setting|current_database|pg_backend_pid|to_regclass|pg_total_relation_size|pg_database_size)'
    OR query ~* '^\s*select (\$1|1)\s*;?\s*$')";

/// One statement's statistics.
#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct SlowQuery {
    /// The statement, with `$n` for its constants.
    pub query: String,
    calls: i64,
    mean_ms: f64,
    /// Its slowest run.
    pub max_ms: f64,
    total_ms: f64,
    /// Run by pgharness itself (migrations, health, these screens), not the application.
    internal: bool,
}

/// The `limit` slowest statements by mean time on this database, optionally only those whose
/// slowest run took at least `at_least_ms`.
///
/// # Errors
///
/// The query's [`sqlx::Error`]: `pg_stat_statements` missing or not preloaded, or the
/// connection lost.
pub async fn slowest(
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
