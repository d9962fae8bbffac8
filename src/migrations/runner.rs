//! Applying, reverting and stamping migrations, one run at a time.

use sqlx::PgPool;
use tracing::info;

use super::{MigrationEntry, MigrationError, Migrations, Status};

impl Migrations {
    /// Applies pending migrations up to `target` (all when `None`); returns those applied.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Modified`] / [`MigrationError::Missing`] before anything runs when the
    /// files and the database disagree; [`MigrationError::Failed`] naming the file and line.
    pub async fn up(
        &self,
        pool: &PgPool,
        target: Option<i64>,
    ) -> Result<Vec<MigrationEntry>, MigrationError> {
        MigrationLock::around(pool, self.up_locked(pool, target)).await
    }

    async fn up_locked(
        &self,
        pool: &PgPool,
        target: Option<i64>,
    ) -> Result<Vec<MigrationEntry>, MigrationError> {
        let before = self.status(pool).await?;
        if let Some(conflict) = before.conflict() {
            return Err(conflict);
        }
        if let Some(target) = target {
            self.require_version(target)?;
        }
        let result = match target {
            Some(target) => self.migrator.run_to(target, pool).await,
            None => self.migrator.run(pool).await,
        };
        result.map_err(|error| self.explain(error))?;
        let applied = self.newly_applied(&before, pool).await?;
        for entry in &applied {
            info!(version = entry.version, file = %entry.file, "applied migration");
        }
        Ok(applied)
    }

    /// Reverts the newest `steps` applied migrations; returns them, newest first.
    ///
    /// # Errors
    ///
    /// As [`Migrations::up`].
    pub async fn down(
        &self,
        pool: &PgPool,
        steps: usize,
    ) -> Result<Vec<MigrationEntry>, MigrationError> {
        MigrationLock::around(pool, self.down_locked(pool, steps)).await
    }

    async fn down_locked(
        &self,
        pool: &PgPool,
        steps: usize,
    ) -> Result<Vec<MigrationEntry>, MigrationError> {
        let before = self.status(pool).await?;
        if let Some(conflict) = before.conflict() {
            return Err(conflict);
        }
        let applied: Vec<&MigrationEntry> = before
            .migrations
            .iter()
            .rev()
            .filter(|entry| entry.applied_at.is_some())
            .collect();
        let target = applied.get(steps).map_or(0, |entry| entry.version);
        self.migrator
            .undo(pool, target)
            .await
            .map_err(|error| self.explain(error))?;
        Ok(applied
            .into_iter()
            .take(steps)
            .cloned()
            .inspect(
                |entry| info!(version = entry.version, file = %entry.file, "reverted migration"),
            )
            .collect())
    }

    /// Records the database as being at `target` (the newest migration when `None`) without
    /// running any SQL: Alembic's `stamp`.
    ///
    /// # Errors
    ///
    /// [`MigrationError::UnknownVersion`] for a version with no file; database errors.
    pub async fn stamp(&self, pool: &PgPool, target: Option<i64>) -> Result<(), MigrationError> {
        let target = match target {
            Some(version) => {
                self.require_version(version)?;
                version
            }
            None => self
                .ups()
                .map(|migration| migration.version)
                .max()
                .unwrap_or(0),
        };
        let mut transaction = pool.begin().await?;
        ensure_table(&mut transaction).await?;
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version > $1 OR version IN (SELECT version FROM _sqlx_migrations WHERE NOT success)")
            .bind(target)
            .execute(&mut *transaction)
            .await?;
        for migration in self.ups().filter(|migration| migration.version <= target) {
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                 VALUES ($1, $2, TRUE, $3, -1) \
                 ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum",
            )
            .bind(migration.version)
            .bind(migration.description.as_ref())
            .bind(migration.checksum.as_ref())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        info!(version = target, "stamped the database");
        Ok(())
    }

    fn require_version(&self, version: i64) -> Result<(), MigrationError> {
        if self.ups().any(|migration| migration.version == version) {
            return Ok(());
        }
        Err(MigrationError::UnknownVersion {
            version,
            known: self
                .ups()
                .map(|migration| migration.version.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    async fn newly_applied(
        &self,
        before: &Status,
        pool: &PgPool,
    ) -> Result<Vec<MigrationEntry>, MigrationError> {
        let after = self.status(pool).await?;
        Ok(after
            .migrations
            .into_iter()
            .filter(|entry| {
                entry.applied_at.is_some()
                    && before
                        .migrations
                        .iter()
                        .any(|old| old.version == entry.version && old.applied_at.is_none())
            })
            .collect())
    }
}

/// Held while `up` or `down` runs, so that what it reports as done is what this process did.
/// (sqlx's own lock covers only the run itself, on another connection and key.) It has a
/// connection of its own, outside the pool: a pool of one connection must still migrate.
struct MigrationLock(sqlx::PgConnection);

impl MigrationLock {
    async fn around<T>(
        pool: &PgPool,
        work: impl Future<Output = Result<T, MigrationError>>,
    ) -> Result<T, MigrationError> {
        let lock = Self::acquire(pool).await?;
        let result = work.await;
        lock.release().await;
        result
    }

    /// "pgharnes" in ASCII: an advisory lock key of our own.
    const KEY: i64 = 0x7067_6861_726e_6573;

    async fn acquire(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut connection =
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&pool.connect_options()).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(Self::KEY)
            .execute(&mut connection)
            .await?;
        Ok(Self(connection))
    }

    /// Closing the session releases the lock.
    async fn release(self) {
        let _ = sqlx::Connection::close(self.0).await;
    }
}

/// sqlx's table, as sqlx creates it (for `stamp` on a database never migrated).
async fn ensure_table(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
            version BIGINT PRIMARY KEY,
            description TEXT NOT NULL,
            installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
            success BOOLEAN NOT NULL,
            checksum BYTEA NOT NULL,
            execution_time BIGINT NOT NULL
        )",
    )
    .execute(connection)
    .await?;
    Ok(())
}
