//! Schema drift: does the live schema match what the migrations produce?
//!
//! The migrations are applied to a throwaway database; the [`Schema`] of both databases is
//! reduced to one line per object (enum types, sequences, functions, tables, columns with type,
//! nullability, default, identity and generation, indexes, constraints, triggers, views,
//! comments), and the two sets of lines compared.

use std::collections::BTreeSet;
use std::fmt;

use sqlx::{Connection as _, PgConnection, PgPool};
use tracing::warn;

use super::schema::Schema;
use super::{MigrationError, Migrations};
use crate::config::DatabaseUrl;

/// One object present on one side only (a changed object shows as one of each).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Difference {
    /// Produced by the migrations, absent from the live database.
    MissingFromLive(String),
    /// In the live database, produced by no migration (e.g. changed by hand).
    OnlyInLive(String),
}

impl fmt::Display for Difference {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingFromLive(object) => write!(
                formatter,
                "- {object}  (expected by migrations, missing from the live database)"
            ),
            Self::OnlyInLive(object) => write!(
                formatter,
                "+ {object}  (in the live database, not in any migration)"
            ),
        }
    }
}

/// The schema of the database `connection` is on, one line per object.
///
/// # Errors
///
/// [`sqlx::Error`] from the catalog queries.
pub async fn snapshot(connection: &mut PgConnection) -> Result<BTreeSet<String>, sqlx::Error> {
    Ok(Schema::read(connection).await?.lines())
}

/// What differs between the schema the migrations produce and the live one.
#[must_use]
pub fn compare(expected: &BTreeSet<String>, live: &BTreeSet<String>) -> Vec<Difference> {
    let mut differences: Vec<Difference> = expected
        .difference(live)
        .cloned()
        .map(Difference::MissingFromLive)
        .chain(
            live.difference(expected)
                .cloned()
                .map(Difference::OnlyInLive),
        )
        .collect();
    differences.sort_by(|a, b| object(a).cmp(object(b)));
    differences
}

fn object(difference: &Difference) -> &str {
    match difference {
        Difference::MissingFromLive(object) | Difference::OnlyInLive(object) => object,
    }
}

/// Applies `migrations` to a throwaway database created through `scratch` (a superuser URL on
/// a server that may hold it, e.g. the embedded one) and compares its schema with `live`.
///
/// # Errors
///
/// [`MigrationError`] when the throwaway database cannot be made or migrated, or a catalog
/// cannot be read.
pub async fn check(
    migrations: &Migrations,
    live: &PgPool,
    scratch: &DatabaseUrl,
) -> Result<Vec<Difference>, MigrationError> {
    let expected = Throwaway::around(scratch, async |url| {
        let pool = migrated(migrations, url).await?;
        let schema = read_schema(&pool).await;
        pool.close().await;
        schema
    })
    .await?;
    let actual = read_schema(live).await?;
    Ok(compare(&expected.lines(), &actual.lines()))
}

/// The schema of the database `pool` is on.
pub(super) async fn read_schema(pool: &PgPool) -> Result<Schema, MigrationError> {
    let mut connection = pool.acquire().await?;
    Ok(Schema::read(&mut connection).await?)
}

/// A pool of one connection to the database at `url`, with `migrations` applied.
pub(super) async fn migrated(
    migrations: &Migrations,
    url: &DatabaseUrl,
) -> Result<PgPool, MigrationError> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(url.connect_options())
        .await?;
    if let Err(error) = migrations.up(&pool, None).await {
        pool.close().await;
        return Err(error);
    }
    Ok(pool)
}

/// A database made for one comparison and dropped after it.
pub(super) struct Throwaway;

impl Throwaway {
    /// Creates a database through `scratch`, runs `work` with its URL, drops it.
    pub(super) async fn around<T>(
        scratch: &DatabaseUrl,
        work: impl AsyncFnOnce(&DatabaseUrl) -> Result<T, MigrationError>,
    ) -> Result<T, MigrationError> {
        // Unique, not secret: this process and this moment.
        let name = format!(
            "pgharness_drift_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        );
        let mut admin =
            PgConnection::connect_with(&scratch.with_database("postgres").connect_options())
                .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await?;
        let result = work(&scratch.with_database(&name)).await;
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {name} WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await
        {
            warn!(database = name, %error, "could not drop the throwaway database");
        }
        let _ = admin.close().await;
        result
    }
}
