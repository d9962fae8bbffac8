//! Migrations: reversible sqlx migrations from `migrations/` (built into the binary, or read from
//! `PGHARNESS_MIGRATIONS_DIR`), managed the way the guide's Alembic commands do, plus a schema
//! drift check ([`drift`]).
//!
//! Each migration runs in its own transaction (PostgreSQL's DDL is transactional), so a failing
//! one leaves the schema as it was. Concurrent runs are serialised by sqlx's advisory lock.

#[cfg(feature = "server")]
pub mod drift;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use tracing::info;

/// sqlx's bookkeeping table.
pub const TABLE: &str = "_sqlx_migrations";

/// Why migrations cannot be read, checked or applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {file} failed at line {line}: {message}. The schema was left as it was \
         (the migration ran in a transaction); fix the file and run `pgharness migrate up` again"
    )]
    /// A migration's SQL failed.
    Failed {
        /// Its file.
        file: String,
        /// The line of the failing statement.
        line: usize,
        /// The server's message.
        message: String,
    },
    #[error(
        "{file} was changed after it was applied (its checksum no longer matches the database). \
         Restore the file; to change the schema, write a new migration (`pgharness migrate new`)"
    )]
    /// An applied migration's file was changed afterwards.
    Modified {
        /// The file.
        file: String,
    },
    #[error(
        "the database has migration {version} ({description}) applied, but there is no file for \
         it: the database is ahead of this code, or the file was deleted. Run the code that has \
         the migration, restore the file, or record the state you want with \
         `pgharness migrate stamp <version>`"
    )]
    /// The database has a migration this code lacks.
    Missing {
        /// Its version.
        version: i64,
        /// Its description.
        description: String,
    },
    #[error(
        "migration {version} does not exist. Known versions: {known} (`pgharness migrate history`)"
    )]
    /// A version was named that no migration has.
    UnknownVersion {
        /// The version named.
        version: i64,
        /// The versions there are.
        known: String,
    },
    #[error("cannot read migrations from {dir}: {source}")]
    /// The migration files cannot be read.
    Source {
        /// The directory.
        dir: PathBuf,
        /// sqlx's error.
        source: sqlx::migrate::MigrateError,
    },
    #[error(
        "{dir} does not exist (working directory {cwd}): create it, or point          PGHARNESS_MIGRATIONS_DIR at your migrations"
    )]
    /// The migrations directory does not exist.
    NoDirectory {
        /// The directory (absolute).
        dir: PathBuf,
        /// The working directory it was resolved from.
        cwd: PathBuf,
    },
    #[error(
        "{file} has no {down}: a migration named .up.sql is reversible and needs its down          script. Add {down}, or rename the file to {version}_{description}.sql for a migration          that cannot be reverted"
    )]
    /// An up migration has no down script.
    MissingDown {
        /// The up script.
        file: String,
        /// The down script to add.
        down: String,
        /// Its version.
        version: i64,
        /// Its description.
        description: String,
    },
    /// A new migration file cannot be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A migration name with other characters than letters, digits and underscores.
    #[error("`{0}` is not a migration name: use letters, digits and underscores")]
    BadName(String),
    /// A statement on the database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// sqlx's migrator failed otherwise.
    #[error(transparent)]
    Migrate(sqlx::migrate::MigrateError),
}

/// One migration and its state in the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationEntry {
    /// Its version (the file name's number).
    pub version: i64,
    /// Its description (the rest of the file name).
    pub description: String,
    /// The up file, as `migrations/<version>_<name>.up.sql`.
    pub file: String,
    /// When it was applied, `None` while pending.
    pub applied_at: Option<String>,
    /// Applied, but its file changed since.
    pub modified: bool,
}

/// Where the database stands against the migration files.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    /// Every migration, in order.
    pub migrations: Vec<MigrationEntry>,
    /// Applied in the database, absent from the files: (version, description).
    pub missing: Vec<(i64, String)>,
}

impl Status {
    /// The migrations not applied yet.
    pub fn pending(&self) -> impl Iterator<Item = &MigrationEntry> {
        self.migrations
            .iter()
            .filter(|entry| entry.applied_at.is_none())
    }

    /// The applied migrations whose file changed since.
    pub fn modified(&self) -> impl Iterator<Item = &MigrationEntry> {
        self.migrations.iter().filter(|entry| entry.modified)
    }

    /// The newest applied migration.
    #[must_use]
    pub fn current(&self) -> Option<&MigrationEntry> {
        self.migrations
            .iter()
            .rev()
            .find(|entry| entry.applied_at.is_some())
    }

    /// Up to date, unmodified, nothing unknown applied.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.pending().next().is_none()
            && self.modified().next().is_none()
            && self.missing.is_empty()
    }

    /// The first problem that forbids running migrations, if any.
    fn conflict(&self) -> Option<MigrationError> {
        if let Some(entry) = self.modified().next() {
            return Some(MigrationError::Modified {
                file: entry.file.clone(),
            });
        }
        self.missing
            .first()
            .map(|(version, description)| MigrationError::Missing {
                version: *version,
                description: description.clone(),
            })
    }
}

impl fmt::Display for Status {
    /// The `history` listing: one line per migration, newest last.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (version, description) in &self.missing {
            writeln!(
                formatter,
                "{version}  {description:<32}  applied, NO FILE (database ahead of code)"
            )?;
        }
        for entry in &self.migrations {
            let state = match (&entry.applied_at, entry.modified) {
                (Some(at), false) => format!("applied {at}"),
                (Some(at), true) => format!("applied {at}, FILE MODIFIED since"),
                (None, _) => "pending".to_owned(),
            };
            let head = if Some(entry) == self.current() {
                " (current)"
            } else {
                ""
            };
            writeln!(
                formatter,
                "{}  {:<32}  {state}{head}",
                entry.version, entry.description
            )?;
        }
        Ok(())
    }
}

/// The migrations of this project (or of a downstream crate).
#[derive(Debug)]
pub struct Migrations {
    migrator: Migrator,
    dir: PathBuf,
}

/// Built into the binary at compile time (rebuilt when `migrations/` changes, see `build.rs`).
static EMBEDDED: Migrator = sqlx::migrate!("./migrations");

impl Migrations {
    /// The migrations built into this binary.
    #[must_use]
    pub fn embedded() -> Self {
        Self {
            migrator: Migrator::with_migrations(EMBEDDED.iter().cloned().collect()),
            dir: PathBuf::from("migrations"),
        }
    }

    /// Migrations read from a directory at run time.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Source`] when the directory cannot be read or holds a bad file name.
    pub async fn from_dir(dir: &Path) -> Result<Self, MigrationError> {
        if !dir.is_dir() {
            return Err(MigrationError::NoDirectory {
                dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
                cwd: std::env::current_dir().unwrap_or_default(),
            });
        }
        let migrator = Migrator::new(dir)
            .await
            .map_err(|source| MigrationError::Source {
                dir: dir.to_owned(),
                source,
            })?;
        // sqlx takes an `.up.sql` without its `.down.sql` silently; `down` would then fail
        // much later, or revert nothing.
        for up in migrator
            .iter()
            .filter(|migration| migration.migration_type == MigrationType::ReversibleUp)
        {
            let has_down = migrator.iter().any(|migration| {
                migration.version == up.version
                    && migration.migration_type == MigrationType::ReversibleDown
            });
            if !has_down {
                let stem = format!("{}_{}", up.version, up.description.replace(' ', "_"));
                return Err(MigrationError::MissingDown {
                    file: format!("{stem}.up.sql"),
                    down: format!("{stem}.down.sql"),
                    version: up.version,
                    description: up.description.replace(' ', "_"),
                });
            }
        }
        Ok(Self {
            migrator,
            dir: dir.to_owned(),
        })
    }

    /// `PGHARNESS_MIGRATIONS_DIR` if set, else the built-in migrations.
    ///
    /// # Errors
    ///
    /// As [`Migrations::from_dir`].
    pub async fn configured(dir: Option<&Path>) -> Result<Self, MigrationError> {
        match dir {
            Some(dir) => Self::from_dir(dir).await,
            None => Ok(Self::embedded()),
        }
    }

    /// A digest of every migration's version and checksum: equal digests, equal schemas.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let mut hasher = sha2::Sha256::new();
        for migration in self.migrator.iter() {
            hasher.update(migration.version.to_le_bytes());
            hasher.update(migration.migration_type.label().as_bytes());
            hasher.update(&*migration.checksum);
        }
        hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// The directory new migrations are written to.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ups(&self) -> impl Iterator<Item = &Migration> {
        self.migrator
            .iter()
            .filter(|migration| !migration.migration_type.is_down_migration())
    }

    fn file_of(&self, migration: &Migration) -> String {
        self.dir
            .join(format!(
                "{}_{}.up.sql",
                migration.version,
                migration.description.replace(' ', "_")
            ))
            .display()
            .to_string()
    }

    /// Where the database stands.
    ///
    /// # Errors
    ///
    /// [`MigrationError::Database`] when the database cannot be read.
    pub async fn status(&self, pool: &PgPool) -> Result<Status, MigrationError> {
        let mut applied = applied(pool).await?;
        let migrations = self
            .ups()
            .map(|migration| {
                let record = applied.remove(&migration.version);
                MigrationEntry {
                    version: migration.version,
                    description: migration.description.to_string(),
                    file: self.file_of(migration),
                    modified: record
                        .as_ref()
                        .is_some_and(|record| record.checksum != *migration.checksum),
                    applied_at: record.map(|record| record.installed_on),
                }
            })
            .collect();
        let missing = applied
            .into_iter()
            .map(|(version, record)| (version, record.description))
            .collect();
        Ok(Status {
            migrations,
            missing,
        })
    }

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

    /// Writes a new, empty, timestamped up/down pair; returns both paths (`pgharness migrate
    /// add`).
    ///
    /// # Errors
    ///
    /// [`MigrationError::BadName`] or [`MigrationError::Create`].
    #[cfg(feature = "cli")]
    pub fn create(&self, name: &str) -> Result<(PathBuf, PathBuf), MigrationError> {
        let slug = name.trim().to_lowercase().replace([' ', '-'], "_");
        if slug.is_empty()
            || !slug
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_')
        {
            return Err(MigrationError::BadName(name.to_owned()));
        }
        let version = chrono::Utc::now().format("%Y%m%d%H%M%S");
        let create = |path: &Path, contents: &str| {
            std::fs::create_dir_all(&self.dir)
                .and_then(|()| {
                    std::fs::File::create_new(path).and_then(|mut file| {
                        std::io::Write::write_all(&mut file, contents.as_bytes())
                    })
                })
                .map_err(|source| MigrationError::Create {
                    path: path.to_owned(),
                    source,
                })
        };
        let up = self.dir.join(format!("{version}_{slug}.up.sql"));
        let down = self.dir.join(format!("{version}_{slug}.down.sql"));
        create(&up, &format!("-- {name}: the change.\n"))?;
        create(
            &down,
            &format!("-- {name}: undo the change made by the up file.\n"),
        )?;
        Ok((up, down))
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

    /// Turns sqlx's errors into ones that name the file, the line and the fix.
    fn explain(&self, error: MigrateError) -> MigrationError {
        match error {
            MigrateError::ExecuteMigration(sqlx::Error::Database(database), version) => {
                let migration = self
                    .migrator
                    .iter()
                    .find(|migration| migration.version == version);
                let file = migration.map_or_else(
                    || version.to_string(),
                    |found| {
                        let file = self.file_of(found);
                        if found.migration_type.is_down_migration() {
                            file.replace(".up.sql", ".down.sql")
                        } else {
                            file
                        }
                    },
                );
                let line = migration
                    .and_then(|found| error_line(found.sql.as_str(), database.as_ref()))
                    .unwrap_or(1);
                MigrationError::Failed {
                    file,
                    line,
                    message: with_extension_hint(database.message()),
                }
            }
            MigrateError::VersionMismatch(version) => MigrationError::Modified {
                file: self
                    .migrator
                    .iter()
                    .find(|migration| migration.version == version)
                    .map_or_else(|| version.to_string(), |found| self.file_of(found)),
            },
            MigrateError::Execute(error) => MigrationError::Database(error),
            other => MigrationError::Migrate(other),
        }
    }
}

/// The server's message, and for an extension it lacks that `PGHARNESS_EXTENSIONS` can provide,
/// the setting that does.
fn with_extension_hint(message: &str) -> String {
    use crate::binaries::extensions::Extension;
    // `extension "vector" is not available` (recent 16.x), or the control file's path (older).
    let missing = message
        .strip_prefix("extension \"")
        .and_then(|rest| rest.strip_suffix("\" is not available"))
        .or_else(|| {
            message
                .strip_prefix("could not open extension control file \"")
                .and_then(|rest| rest.split_once(".control\""))
                .and_then(|(path, _)| path.rsplit(['/', '\\']).next())
        });
    match missing.and_then(|name| name.parse::<Extension>().ok()) {
        Some(extension) => format!(
            "{message} (set PGHARNESS_EXTENSIONS={extension} for the embedded server to have \
             it; a server named by DATABASE_URL needs it installed there)"
        ),
        None => message.to_owned(),
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

/// The line of `sql` that a PostgreSQL error points at, when it points at one.
pub(crate) fn error_line(sql: &str, error: &dyn sqlx::error::DatabaseError) -> Option<usize> {
    let position = match error
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .position()?
    {
        sqlx::postgres::PgErrorPosition::Original(position) => position,
        sqlx::postgres::PgErrorPosition::Internal { .. } => return None,
    };
    Some(
        sql.chars()
            .take(position.saturating_sub(1))
            .filter(|character| *character == '\n')
            .count()
            + 1,
    )
}

struct AppliedRecord {
    description: String,
    installed_on: String,
    checksum: Vec<u8>,
}

async fn applied(pool: &PgPool) -> Result<BTreeMap<i64, AppliedRecord>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT version, description, to_char(installed_on, 'YYYY-MM-DD HH24:MI:SS TZ'), checksum \
         FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, description, installed_on, checksum)| {
            (
                version,
                AppliedRecord {
                    description,
                    installed_on,
                    checksum,
                },
            )
        })
        .collect())
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
