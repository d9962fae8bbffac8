//! The databases and roles `testdb serve` makes and drops on the shared server, and the SQL
//! quoting they need.

use serde_json::json;
use sqlx::postgres::PgPool;
use sqlx::{Connection as _, PgConnection};
use tracing::warn;

use super::pool::{SERVED_PREFIX, Service};
use crate::database::sql;

/// The key of a template's hash in its database comment.
pub(super) const HASH_MARK: &str = "integresql_hash";

pub(super) async fn execute(pool: &PgPool, statement: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await
        .map(drop)
}

impl Service {
    /// Databases, then roles, of `testdb serve` whose name `doomed` accepts.
    pub(super) async fn drop_leftovers(
        &self,
        doomed: impl Fn(&str) -> bool,
    ) -> Result<(), sqlx::Error> {
        for name in self
            .served("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .await?
        {
            let statement = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                sql::identifier(&name)
            );
            if doomed(&name)
                && let Err(error) = execute(&self.pool, statement).await
            {
                warn!(database = name, %error, "could not drop a served test database");
            }
        }
        for name in self
            .served("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
            .await?
        {
            let statement = format!("DROP ROLE IF EXISTS {}", sql::identifier(&name));
            if doomed(&name)
                && let Err(error) = execute(&self.pool, statement).await
            {
                warn!(role = name, %error, "could not drop a test role");
            }
        }
        Ok(())
    }

    /// Names of `testdb serve`'s databases or roles, as `query` lists them.
    async fn served(&self, query: &'static str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(query)
            .bind(format!("{SERVED_PREFIX}%"))
            .fetch_all(&self.pool)
            .await
    }

    /// Drops a database and its role (same name); failures are only logged.
    pub(super) async fn drop_database(&self, name: &str) {
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            sql::identifier(name)
        );
        if let Err(error) = execute(&self.pool, statement).await {
            warn!(database = name, %error, "could not drop a served test database");
        }
        let statement = format!("DROP ROLE IF EXISTS {}", sql::identifier(name));
        match execute(&self.pool, statement).await {
            Ok(()) => {}
            // A template's role still owns the objects of a clone being made (dependent
            // objects, 2BP01): dropped with the rest at shutdown.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("2BP01") => {}
            Err(error) => warn!(role = name, %error, "could not drop a served test role"),
        }
    }

    /// The template database, its hash in its comment (for `pgharness testdb list`).
    pub(super) async fn create_template(
        &self,
        hash: &str,
        name: &str,
        password: &str,
    ) -> Result<(), sqlx::Error> {
        self.create_owned(name, password, "TEMPLATE template0")
            .await?;
        let comment = serde_json::to_string(&json!({ HASH_MARK: hash })).unwrap_or_default();
        execute(
            &self.pool,
            format!(
                "COMMENT ON DATABASE {} IS {}",
                sql::identifier(name),
                sql::literal(&comment)
            ),
        )
        .await
    }

    /// A database and a login role of the same name that owns it, which no other role may
    /// connect to.
    async fn create_owned(
        &self,
        name: &str,
        password: &str,
        source: &str,
    ) -> Result<(), sqlx::Error> {
        let database = sql::identifier(name);
        for statement in [
            format!(
                "CREATE ROLE {database} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 PASSWORD {}",
                sql::literal(password)
            ),
            format!("CREATE DATABASE {database} OWNER {database} {source}"),
            format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
        ] {
            execute(&self.pool, statement).await?;
        }
        Ok(())
    }

    /// A clone owned by a new role of its own, which also owns everything in it.
    pub(super) async fn clone_template(
        &self,
        template: &str,
        name: &str,
        password: &str,
    ) -> Result<(), sqlx::Error> {
        let database = sql::identifier(name);
        self.create_owned(
            name,
            password,
            &format!("TEMPLATE {} STRATEGY FILE_COPY", sql::identifier(template)),
        )
        .await?;
        let mut inside =
            PgConnection::connect_with(&self.admin.with_database(name).connect_options()).await?;
        let reassigned = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "REASSIGN OWNED BY {} TO {database}",
            sql::identifier(template)
        )))
        .execute(&mut inside)
        .await;
        let _ = inside.close().await;
        reassigned.map(drop)
    }
}
