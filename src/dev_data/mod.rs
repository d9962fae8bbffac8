//! The dev database back to a known state: reset (drop, recreate, migrate), load a named
//! fixture, save and restore named snapshots ([`snapshots`]). Refused outside development and
//! testing, and on an external server unless `PGHARNESS_DEV_DATA_ON_EXTERNAL` allows it: each
//! destroys or changes data.

pub mod snapshots;

use std::path::Path;
use std::time::Duration;

use sqlx::{ConnectOptions as _, Connection as _, PgConnection};

use crate::config::{DatabaseUrl, DevDataSettings, Environment};
use crate::database::{Database, DatabaseError, sql};
use crate::fixtures::{self, FixtureError};
use crate::migrations::{MigrationEntry, MigrationError, Migrations};

/// Why the dev database was not reset, seeded or snapshotted.
#[derive(Debug, thiserror::Error)]
pub enum DevDataError {
    /// Not a development or testing environment.
    #[error(
        "resetting, seeding and snapshots of the database are refused in the {0} environment: \
         they are for development and testing only (APP_ENV)"
    )]
    WrongEnvironment(Environment),
    /// The database is on an external server.
    #[error(
        "resetting, seeding and snapshots are refused on the external server at {0}: it may be \
         shared. Set PGHARNESS_DEV_DATA_ON_EXTERNAL=true to allow them"
    )]
    External(String),
    /// The server refused to drop or create the database.
    #[error("cannot {action} the database {database}: {source}")]
    Recreate {
        /// What was being done.
        action: &'static str,
        /// The database.
        database: String,
        /// The server's answer.
        source: sqlx::Error,
    },
    /// The migrations failed on the new database.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The fixture is missing or failed (nothing of it stays).
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    /// No connection from the pool.
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

/// Where the dev database is and what may be done to it.
#[derive(Debug, Clone)]
pub struct DevData {
    settings: DevDataSettings,
    environment: Environment,
    /// `Some(masked URL)` when the server is external.
    external: Option<String>,
}

impl DevData {
    /// The policy for `environment`, on an external server when `external` names one.
    #[must_use]
    pub fn new(
        settings: DevDataSettings,
        environment: Environment,
        external: Option<String>,
    ) -> Self {
        Self {
            settings,
            environment,
            external,
        }
    }

    /// Whether reset, load and snapshots are allowed here, and why not.
    ///
    /// # Errors
    ///
    /// The [`DevDataError`] that says why not.
    pub fn allowed(&self) -> Result<(), DevDataError> {
        if !matches!(
            self.environment,
            Environment::Development | Environment::Testing
        ) {
            return Err(DevDataError::WrongEnvironment(self.environment));
        }
        match &self.external {
            Some(url) if !self.settings.allow_external => Err(DevDataError::External(url.clone())),
            _ => Ok(()),
        }
    }

    /// The fixtures folder.
    #[must_use]
    pub fn fixtures_dir(&self) -> &Path {
        &self.settings.fixtures_dir
    }

    /// The fixtures that can be loaded.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Io`] when the folder cannot be read.
    pub fn fixtures(&self) -> Result<Vec<String>, FixtureError> {
        fixtures::names(&self.settings.fixtures_dir)
    }

    /// Drops the application database (closing every session on it, the pool's included),
    /// creates it empty and applies the migrations. Extensions it had that migrations do not
    /// create (`pg_stat_statements`) are created again. Returns the migrations applied.
    ///
    /// # Errors
    ///
    /// [`DevDataError`]: refused here, the server's refusal to drop or create, a migration.
    pub async fn reset(
        &self,
        url: &DatabaseUrl,
        database: &Database,
        migrations: &Migrations,
    ) -> Result<Vec<MigrationEntry>, DevDataError> {
        self.allowed()?;
        let failed = |action| {
            move |source| DevDataError::Recreate {
                action,
                database: url.database.clone(),
                source,
            }
        };
        let extensions: Vec<String> = database
            .run(async |connection| {
                sqlx::query_scalar(
                    "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql'",
                )
                .fetch_all(connection)
                .await
            })
            .await?;
        let mut maintenance = server_connection(url)
            .await
            .map_err(failed("connect to the server of"))?;
        let database_name = sql::identifier(&url.database);
        for (action, statement) in [
            (
                "drop",
                format!("DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"),
            ),
            ("create", format!("CREATE DATABASE {database_name}")),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut maintenance)
                .await
                .map_err(failed(action))?;
        }
        let _ = maintenance.close().await;
        // The pool's connections died with the old database: `run` finds that out and retries.
        database
            .run(async |connection| {
                for extension in &extensions {
                    let statement = format!(
                        "CREATE EXTENSION IF NOT EXISTS {}",
                        sql::identifier(extension)
                    );
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(())
            })
            .await?;
        Ok(migrations.up(database.maintenance_pool(), None).await?)
    }

    /// Applies the fixture `name` (`<fixtures>/<name>.sql`) in one transaction.
    ///
    /// # Errors
    ///
    /// [`DevDataError`]: refused here, the fixture is missing, or one of its statements failed
    /// (its line is named; nothing of it stays).
    pub async fn load(&self, database: &Database, name: &str) -> Result<(), DevDataError> {
        self.allowed()?;
        let fixture = fixtures::read(&self.settings.fixtures_dir, name)?;
        let mut connection = database.acquire().await?;
        fixtures::apply(&mut connection, &fixture).await?;
        Ok(())
    }
}

/// A connection to the `postgres` database of the server of `url`, for statements on whole
/// databases. Copying a database takes seconds at times, and is no slow statement to warn of.
async fn server_connection(url: &DatabaseUrl) -> Result<PgConnection, sqlx::Error> {
    let options = url
        .with_database("postgres")
        .connect_options()
        .log_slow_statements(tracing::log::LevelFilter::Debug, Duration::from_secs(1));
    PgConnection::connect_with(&options).await
}
