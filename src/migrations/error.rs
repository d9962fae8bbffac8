//! Why migrations cannot be read, checked or applied, and sqlx's errors turned into ones that
//! name the file, the line and the fix.

use std::path::PathBuf;

use sqlx::migrate::MigrateError;

use super::Migrations;

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

impl Migrations {
    /// Turns sqlx's errors into ones that name the file, the line and the fix.
    pub(super) fn explain(&self, error: MigrateError) -> MigrationError {
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

/// The line of `sql` that a `PostgreSQL` error points at, when it points at one.
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
