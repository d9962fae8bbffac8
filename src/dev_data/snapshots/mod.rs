//! Named snapshots of the dev database, kept as databases of the same server
//! (`pgh_snap_<name>`, closed to connections, their creation time and migration in the
//! database's comment): a save and a restore are file copies of the cluster, no dump.
//!
//! A copy needs its source free of sessions, so a save fences the dev database for the copy
//! (new connections refused, sessions ended, allowed again after). Each snapshot also has a
//! ready copy (`pgh_next_<name>`, closed too), made after a save and after each restore, so that
//! a restore copies nothing: it fences the dev database only to swap the ready copy in by
//! renaming both in one transaction, then drops the replaced database. Without a ready copy
//! (older snapshots, or one not yet made) a restore first copies the snapshot beside the dev
//! database while it still serves. Whatever fails before the swap leaves the dev database as it
//! was. Clients connect by name, so the pool of a running `serve` follows the restored database
//! by itself, whichever process restored it; meanwhile its requests get 503.
//!
//! Operations are serialized across processes by an advisory lock on the server, held until the
//! ready copy is made ([`ReadyCopyDue`]). A ready copy is made under a temporary name and takes
//! its own only when complete: what an interrupted operation left is dropped by the next one.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, PgConnection};

use self::cluster::{
    drop_leftovers, execute, exists, list, locked_server, make_ready_copy, restore, save,
};
use super::{DevData, DevDataError, server_connection};
use crate::config::DatabaseUrl;
use crate::database::{Database, sql};
use crate::migrations::{MigrationEntry, MigrationError, Migrations};

mod cluster;

/// What a snapshot name may be, for messages.
pub const NAME_RULE: &str = "1 to 40 characters among lowercase letters a-z, digits, `_` and \
                             `-`, starting with a letter or a digit";
/// The longest snapshot name (the databases' are at most 11 more, under `PostgreSQL`'s 63).
const NAME_MAX: usize = 40;
/// Snapshot databases are named this and the snapshot's name.
const PREFIX: &str = "pgh_snap_";
/// A snapshot's ready copy is named this and the snapshot's name.
const READY: &str = "pgh_next_";
/// A ready copy being made is named this and the snapshot's name, until complete.
const MAKING: &str = "pgh_making_";
/// A restore without a ready copy copies the snapshot here, then swaps it with the dev database.
const INCOMING: &str = "pgh_restore_incoming";
/// The replaced dev database, dropped once the swap is done.
const OUTGOING: &str = "pgh_restore_outgoing";
/// How long ended sessions may take to go.
const SESSIONS_END_WITHIN: Duration = Duration::from_secs(5);
/// The advisory lock (on the `postgres` database) that serializes snapshot operations.
const LOCK_KEY: i64 = 0x7067_685f_736e_6170;

/// Why a snapshot was not listed, saved, restored or deleted.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Not allowed here (as reset is not).
    #[error(transparent)]
    Refused(#[from] DevDataError),
    /// A name no snapshot can have.
    #[error("`{0}` is not a valid snapshot name: use {NAME_RULE}")]
    InvalidName(String),
    /// No snapshot by that name.
    #[error("no snapshot named `{0}`: `pgharness snapshot list` shows those there are")]
    NotFound(String),
    /// Saving under a name taken.
    #[error(
        "a snapshot named `{0}` exists already: delete it first (`pgharness snapshot delete \
         {0}`) or choose another name"
    )]
    Exists(String),
    /// The server refused a step; the dev database is as it was.
    #[error("cannot {action}: {source}")]
    Server {
        /// What was being done.
        action: &'static str,
        /// The server's answer.
        source: sqlx::Error,
    },
    /// Reading or applying the migrations failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
}

/// What `step` failing means.
fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> SnapshotError {
    move |source| SnapshotError::Server { action, source }
}

/// Whether `name` may name a snapshot ([`NAME_RULE`]).
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= NAME_MAX
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_-".contains(byte))
}

fn database_of(name: &str) -> Result<String, SnapshotError> {
    if valid_name(name) {
        Ok(format!("{PREFIX}{name}"))
    } else {
        Err(SnapshotError::InvalidName(name.to_owned()))
    }
}

/// What a snapshot's database comment holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mark {
    created_at: String,
    migration: Option<i64>,
    migration_description: Option<String>,
}

/// One snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Snapshot {
    /// Its name.
    pub name: String,
    /// The disk it uses, in bytes: the snapshot and its ready copy, when there is one.
    pub size_bytes: i64,
    /// Whether its ready copy exists: a restore then copies nothing.
    pub ready: bool,
    /// When it was saved (RFC 3339, UTC); `None` when its mark was lost.
    pub created_at: Option<String>,
    /// The newest migration applied when it was saved; `None` when none was.
    pub migration: Option<i64>,
    /// That migration's description.
    pub migration_description: Option<String>,
}

/// Every snapshot, by name, and the disk they use (their ready copies included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Snapshots {
    /// By name.
    pub snapshots: Vec<Snapshot>,
    /// Their sizes added up (their ready copies included), in bytes.
    pub total_bytes: i64,
}

/// A restore done, and where the restored database stands against this code's migrations.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Restored {
    /// The snapshot restored.
    pub snapshot: Snapshot,
    /// Migrations of this code the snapshot predates (applied when asked to).
    #[schema(value_type = Vec<Object>)]
    pub pending: Vec<MigrationEntry>,
    /// Migrations applied in the snapshot that this code lacks: (version, description).
    #[schema(value_type = Vec<Object>)]
    pub unknown: Vec<(i64, String)>,
    /// The pending migrations applied after the restore, when asked to.
    #[schema(value_type = Vec<Object>)]
    pub migrated: Vec<MigrationEntry>,
}

impl Restored {
    /// What the user should know when the snapshot was at another migration than this code.
    #[must_use]
    pub fn notice(&self) -> Option<String> {
        let at = self.snapshot.migration.map_or_else(
            || "no migration".to_owned(),
            |version| format!("migration {version}"),
        );
        if !self.migrated.is_empty() {
            return Some(format!(
                "the snapshot was at {at}: applied the {} newer migration(s) of this code",
                self.migrated.len()
            ));
        }
        if !self.unknown.is_empty() {
            return Some(format!(
                "the snapshot is at {at}, ahead of this code: {} applied migration(s) have no \
                 file here (newest {}). Check out the code it was saved with, or reset the \
                 database",
                self.unknown.len(),
                self.unknown
                    .iter()
                    .map(|(version, _)| version)
                    .max()
                    .unwrap_or(&0)
            ));
        }
        (!self.pending.is_empty()).then(|| {
            format!(
                "the snapshot is at {at}, behind this code by {} migration(s): run `pgharness \
                 migrate up` (or restore with `--migrate`) to apply them",
                self.pending.len()
            )
        })
    }
}

impl DevData {
    /// Every snapshot on the server of `url`. Allowed everywhere: it reads only.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Server`] when the server cannot be asked.
    pub async fn snapshots(&self, url: &DatabaseUrl) -> Result<Snapshots, SnapshotError> {
        let mut server = server_connection(url)
            .await
            .map_err(failed("connect to the server"))?;
        let snapshots = list(&mut server).await;
        let _ = server.close().await;
        let snapshots = snapshots?;
        Ok(Snapshots {
            total_bytes: snapshots.iter().map(|snapshot| snapshot.size_bytes).sum(),
            snapshots,
        })
    }

    /// Saves the dev database as the snapshot `name`. Its sessions (the pool's included) are
    /// ended and new ones refused while it is copied. Returns the snapshot, and its ready copy
    /// to make (the dev database is open again meanwhile).
    ///
    /// # Errors
    ///
    /// [`SnapshotError`]: refused here, a bad or taken name, the server's refusal.
    pub async fn save_snapshot(
        &self,
        url: &DatabaseUrl,
        database: &Database,
        migrations: &Migrations,
        name: &str,
    ) -> Result<(Snapshot, ReadyCopyDue), SnapshotError> {
        self.allowed()?;
        let target = database_of(name)?;
        let status = migrations.status(database.maintenance_pool()).await?;
        let newest = status
            .missing
            .iter()
            .map(|(version, description)| (*version, description.clone()))
            .chain(
                status
                    .current()
                    .map(|entry| (entry.version, entry.description.clone())),
            )
            .max_by_key(|(version, _)| *version);
        let mark = Mark {
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            migration: newest.as_ref().map(|(version, _)| *version),
            migration_description: newest.map(|(_, description)| description),
        };
        let mut server = locked_server(url).await?;
        let saved = save(&mut server, &url.database, &target, &mark).await;
        database.connections_replaced();
        let ready_copy = ReadyCopyDue::after(saved, server, name).await?;
        Ok((self.snapshot(url, name).await?, ready_copy))
    }

    /// Replaces the dev database with the snapshot `name` (its ready copy when there is one,
    /// else a copy made first), then applies this code's newer migrations when `migrate` is
    /// set. The snapshot stays. Returns what was restored, and the snapshot's next ready copy to
    /// make.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`]: refused here, no such snapshot, the server's refusal (the dev
    /// database is then as it was), a migration.
    pub async fn restore_snapshot(
        &self,
        url: &DatabaseUrl,
        database: &Database,
        migrations: &Migrations,
        name: &str,
        migrate: bool,
    ) -> Result<(Restored, ReadyCopyDue), SnapshotError> {
        self.allowed()?;
        database_of(name)?;
        let snapshot = self.snapshot(url, name).await?;
        let mut server = locked_server(url).await?;
        let restored = restore(&mut server, &url.database, name).await;
        database.connections_replaced();
        let ready_copy = ReadyCopyDue::after(restored, server, name).await?;
        let pool = database.maintenance_pool();
        let status = migrations.status(pool).await?;
        let migrated = if migrate && status.missing.is_empty() {
            migrations.up(pool, None).await?
        } else {
            Vec::new()
        };
        let restored = Restored {
            snapshot,
            pending: if migrated.is_empty() {
                status.pending().cloned().collect()
            } else {
                Vec::new()
            },
            unknown: status.missing,
            migrated,
        };
        Ok((restored, ready_copy))
    }

    /// Deletes the snapshot `name` and its ready copy.
    ///
    /// # Errors
    ///
    /// [`SnapshotError`]: refused here, no such snapshot, the server's refusal.
    pub async fn delete_snapshot(
        &self,
        url: &DatabaseUrl,
        name: &str,
    ) -> Result<(), SnapshotError> {
        self.allowed()?;
        let target = database_of(name)?;
        let mut server = locked_server(url).await?;
        let deleted = async {
            drop_leftovers(&mut server).await?;
            if !exists(&mut server, &target).await? {
                return Err(SnapshotError::NotFound(name.to_owned()));
            }
            // The ready copy first: interrupted between the two, the snapshot is still whole.
            for (action, statement) in [
                (
                    "delete the snapshot's ready copy",
                    format!(
                        "DROP DATABASE IF EXISTS {}",
                        sql::identifier(&format!("{READY}{name}"))
                    ),
                ),
                (
                    "delete the snapshot",
                    format!("DROP DATABASE {}", sql::identifier(&target)),
                ),
            ] {
                execute(&mut server, action, &statement).await?;
            }
            Ok(())
        }
        .await;
        let _ = server.close().await;
        deleted
    }

    /// The snapshot `name`.
    async fn snapshot(&self, url: &DatabaseUrl, name: &str) -> Result<Snapshot, SnapshotError> {
        self.snapshots(url)
            .await?
            .snapshots
            .into_iter()
            .find(|snapshot| snapshot.name == name)
            .ok_or_else(|| SnapshotError::NotFound(name.to_owned()))
    }
}

/// The ready copy of a snapshot, to make after a save or a restore ([`Self::make`]). Until then
/// the snapshot lock stays held, so that other operations wait; dropped unmade, the lock is given
/// up and the next restore of the snapshot copies it first.
#[must_use = "the snapshot lock is held until the ready copy is made"]
#[derive(Debug)]
pub struct ReadyCopyDue {
    /// Holds the snapshot lock.
    server: PgConnection,
    snapshot: String,
}

impl ReadyCopyDue {
    /// After `done`, a save or a restore of `snapshot` on `server`, which holds the snapshot
    /// lock: the ready copy to make, the lock kept; on failure, the lock given up.
    async fn after(
        done: Result<(), SnapshotError>,
        server: PgConnection,
        snapshot: &str,
    ) -> Result<Self, SnapshotError> {
        if let Err(error) = done {
            let _ = server.close().await;
            return Err(error);
        }
        Ok(Self {
            server,
            snapshot: snapshot.to_owned(),
        })
    }

    /// The snapshot's name.
    #[must_use]
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }

    /// Copies the snapshot under a temporary name, gives the copy the ready copy's name once
    /// complete, then gives up the snapshot lock.
    ///
    /// # Errors
    ///
    /// [`SnapshotError::Server`] when the server refused the copy (a session on the snapshot,
    /// the disk full): the next restore of the snapshot copies it first.
    pub async fn make(mut self) -> Result<(), SnapshotError> {
        let made = make_ready_copy(&mut self.server, &self.snapshot).await;
        let _ = self.server.close().await;
        made
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_short_lowercase_words_safe_in_any_quoting() {
        for good in ["a", "0", "before-import", "v2_3", &"z".repeat(40)] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "A",
            "a b",
            "a;b",
            "a/b",
            "a\"b",
            "é",
            &"z".repeat(41),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
