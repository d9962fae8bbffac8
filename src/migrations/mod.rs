//! Migrations: reversible sqlx migrations from `migrations/` (built into the binary, or read from
//! `PGHARNESS_MIGRATIONS_DIR`), managed the way the guide's Alembic commands do, plus a schema
//! drift check ([`drift`]) and migrations written from the dev database ([`autogenerate`]), both
//! over one reading of the catalogs ([`schema`]).
//!
//! Each migration runs in its own transaction (`PostgreSQL`'s DDL is transactional), so a failing
//! one leaves the schema as it was. Concurrent runs are serialised by sqlx's advisory lock.

#[cfg(feature = "server")]
pub mod autogenerate;
#[cfg(feature = "server")]
pub mod drift;
mod error;
mod runner;
#[cfg(feature = "server")]
pub mod schema;
mod status;

use std::path::{Path, PathBuf};

use sqlx::migrate::{Migration, MigrationType, Migrator};

pub use self::error::MigrationError;
pub(crate) use self::error::error_line;
pub use self::status::{MigrationEntry, Status};

/// sqlx's bookkeeping table.
pub const TABLE: &str = "_sqlx_migrations";

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
        format!("{:x}", hasher.finalize())
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

    /// The part of a migration's file names that `name` gives: lower case, `_` for spaces.
    ///
    /// # Errors
    ///
    /// [`MigrationError::BadName`] for a name of other characters than letters, digits, spaces,
    /// `-` and `_`.
    #[cfg(feature = "cli")]
    pub fn slug(name: &str) -> Result<String, MigrationError> {
        let slug = name.trim().to_lowercase().replace([' ', '-'], "_");
        if slug.is_empty()
            || !slug
                .chars()
                .all(|character| character.is_ascii_alphanumeric() || character == '_')
        {
            return Err(MigrationError::BadName(name.to_owned()));
        }
        Ok(slug)
    }

    /// Writes a new timestamped up/down pair (`pgharness migrate new`): `scripts` (up, down), or
    /// two files holding only a comment.
    ///
    /// # Errors
    ///
    /// [`MigrationError::BadName`] or [`MigrationError::Create`].
    #[cfg(feature = "cli")]
    pub fn create(
        &self,
        name: &str,
        scripts: Option<(&str, &str)>,
    ) -> Result<NewMigration, MigrationError> {
        let slug = Self::slug(name)?;
        let now = chrono::Utc::now();
        let version = now.format("%Y%m%d%H%M%S").to_string();
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
        let (up_script, down_script) = match scripts {
            Some((up, down)) => (up.to_owned(), down.to_owned()),
            None => (
                format!("-- {name}: the change.\n"),
                format!("-- {name}: undo the change made by the up file.\n"),
            ),
        };
        create(&up, &up_script)?;
        if let Err(error) = create(&down, &down_script) {
            let _ = std::fs::remove_file(&up);
            return Err(error);
        }
        Ok(NewMigration {
            version: version.parse().unwrap_or_default(),
            up,
            down,
        })
    }
}

/// A migration `pgharness migrate new` wrote.
#[cfg(feature = "cli")]
#[derive(Debug)]
pub struct NewMigration {
    /// Its version (the time it was made, `YYYYMMDDhhmmss`).
    pub version: i64,
    /// The `.up.sql` file.
    pub up: PathBuf,
    /// The `.down.sql` file.
    pub down: PathBuf,
}
