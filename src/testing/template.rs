//! Templates: per migration set, a database migrated once and cloned for every test; per set of
//! baked fixtures, a copy of it with the fixtures applied. Its name
//! is a key of the migrations' contents, the server's version and the template format, so a
//! change to any of them builds a new one; building is serialised across processes by an
//! advisory lock.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection};

use super::TestDbError;
use super::server::{self, TEMPLATE_PREFIX};
use crate::config::DatabaseUrl;
use crate::fixtures::{self, Fixture};
use crate::migrations::{MigrationError, Migrations};

/// Bumped when what a template holds changes for the same migrations: old ones are not reused.
const TEMPLATE_FORMAT: &str = "3";

/// The template's name: from the migrations' contents (and any baked fixtures'), the server's
/// version and the template format, so that a change to any of them builds a new one.
pub(super) fn template_name(fingerprint: &str, server_version: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{fingerprint}/{server_version}/{TEMPLATE_FORMAT}"));
    format!("{TEMPLATE_PREFIX}{}", &format!("{digest:x}")[..16])
}

/// What a template holds: a migration set, or a migrated template with fixtures baked in.
pub(super) enum Recipe<'a> {
    /// The migrations applied to an empty database.
    Migrated(&'a Migrations),
    /// A copy of the `base` template with these fixtures applied.
    Baked {
        /// The migrated template.
        base: &'a str,
        /// Applied in order, as a test would.
        fixtures: &'a [Fixture],
    },
}

/// The template `template`, made by `recipe` unless it exists: built once (across processes:
/// under an advisory lock) and kept while it is among the most recently used.
pub(super) async fn ensure_template(
    connection: &mut PgConnection,
    admin: &DatabaseUrl,
    recipe: &Recipe<'_>,
    template: &str,
) -> Result<(), TestDbError> {
    let lock = server::template_lock(template);
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock)
        .execute(&mut *connection)
        .await?;
    let result = build_template(connection, admin, recipe, template).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .execute(&mut *connection)
        .await?;
    result
}

async fn build_template(
    connection: &mut PgConnection,
    admin: &DatabaseUrl,
    recipe: &Recipe<'_>,
    template: &str,
) -> Result<(), TestDbError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(template)
    .fetch_one(&mut *connection)
    .await?;
    if exists {
        return Ok(());
    }
    let building = format!("{template}_building");
    let create = match recipe {
        Recipe::Migrated(_) => format!("CREATE DATABASE \"{building}\""),
        Recipe::Baked { base, .. } => {
            format!("CREATE DATABASE \"{building}\" TEMPLATE \"{base}\" STRATEGY FILE_COPY")
        }
    };
    // One statement at a time: several in one string run as one transaction, which
    // CREATE and DROP DATABASE refuse.
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
        format!("DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"),
        create,
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await?;
    }
    let url = admin.with_database(&building);
    let made = match recipe {
        Recipe::Migrated(migrations) => migrate(&url, migrations).await,
        Recipe::Baked { fixtures, .. } => bake(&url, fixtures).await,
    };
    if let Err(error) = made {
        server::drop_on(connection, &building).await?;
        return Err(error);
    }
    // Marked before it becomes a template: an unmarked template is an old one, and dropped.
    server::mark_template_used(connection, &building).await?;
    for statement in [
        format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""),
        format!("ALTER DATABASE \"{template}\" IS_TEMPLATE true"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Applies `fixtures` to the database at `url`, as a test would.
pub(super) async fn bake(url: &DatabaseUrl, fixtures: &[Fixture]) -> Result<(), TestDbError> {
    let mut connection = PgConnection::connect_with(&url.connect_options()).await?;
    for fixture in fixtures {
        fixtures::apply(&mut connection, fixture).await?;
    }
    let _ = connection.close().await;
    Ok(())
}

/// Applies `migrations` to the database at `url`, then warms its relation cache.
pub(super) async fn migrate(url: &DatabaseUrl, migrations: &Migrations) -> Result<(), TestDbError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.connect_options())
        .await?;
    let migrated = migrations.up(&pool, None).await;
    pool.close().await;
    match migrated {
        Ok(_) => {
            // A connection to a database whose catalogs changed rebuilds the relation cache's
            // init file (`pg_internal.init`); made here, once, it is copied into every clone,
            // whose first connection is then several milliseconds faster.
            let warm = PgConnection::connect_with(&url.connect_options()).await?;
            let _ = warm.close().await;
            Ok(())
        }
        Err(MigrationError::Failed {
            file,
            line,
            message,
        }) => Err(TestDbError::MigrationFailed {
            file,
            line,
            message,
            dir: migrations.dir().to_owned(),
        }),
        Err(other) => Err(other.into()),
    }
}
