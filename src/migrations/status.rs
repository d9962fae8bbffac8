//! Where the database stands against the migration files: each migration's state, and the
//! `history` listing.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::PgPool;

use super::{MigrationError, Migrations};

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
    pub(super) fn conflict(&self) -> Option<MigrationError> {
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

impl Migrations {
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
