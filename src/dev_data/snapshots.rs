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

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, PgConnection};
use tracing::warn;

use super::{DevData, DevDataError, quoted, server_connection};
use crate::config::DatabaseUrl;
use crate::database::Database;
use crate::migrations::{MigrationEntry, MigrationError, Migrations};

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
                        quoted(&format!("{READY}{name}"))
                    ),
                ),
                (
                    "delete the snapshot",
                    format!("DROP DATABASE {}", quoted(&target)),
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

/// A connection to the server's `postgres` database holding the snapshot lock (given up when
/// the connection closes).
async fn locked_server(url: &DatabaseUrl) -> Result<PgConnection, SnapshotError> {
    let mut server = server_connection(url)
        .await
        .map_err(failed("connect to the server"))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut server)
        .await
        .map_err(failed("wait for another snapshot operation to end"))?;
    Ok(server)
}

async fn list(server: &mut PgConnection) -> Result<Vec<Snapshot>, SnapshotError> {
    let rows: Vec<(String, i64, bool, Option<String>)> = sqlx::query_as(
        "SELECT substr(snapshot.datname, $1), \
                pg_database_size(snapshot.oid) + coalesce(pg_database_size(ready.oid), 0), \
                ready.oid IS NOT NULL, shobj_description(snapshot.oid, 'pg_database') \
         FROM pg_database snapshot \
         LEFT JOIN pg_database ready ON ready.datname = $3 || substr(snapshot.datname, $1) \
         WHERE starts_with(snapshot.datname, $2) ORDER BY snapshot.datname",
    )
    .bind(i32::try_from(PREFIX.len() + 1).unwrap_or(i32::MAX))
    .bind(PREFIX)
    .bind(READY)
    .fetch_all(server)
    .await
    .map_err(failed("list the snapshots"))?;
    Ok(rows
        .into_iter()
        .map(|(name, size_bytes, ready, comment)| {
            let mark = comment.and_then(|text| serde_json::from_str::<Mark>(&text).ok());
            Snapshot {
                name,
                size_bytes,
                ready,
                created_at: mark.as_ref().map(|mark| mark.created_at.clone()),
                migration: mark.as_ref().and_then(|mark| mark.migration),
                migration_description: mark.and_then(|mark| mark.migration_description),
            }
        })
        .collect())
}

async fn exists(server: &mut PgConnection, database: &str) -> Result<bool, SnapshotError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(server)
        .await
        .map_err(failed("look the snapshot up"))
}

async fn execute(
    server: &mut PgConnection,
    action: &'static str,
    statement: &str,
) -> Result<(), SnapshotError> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(server)
        .await
        .map_err(failed(action))?;
    Ok(())
}

/// The role owning `database`, quoted.
async fn owner_of(server: &mut PgConnection, database: &str) -> Result<String, SnapshotError> {
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(server)
    .await
    .map_err(failed("find the owner of the database"))?;
    Ok(quoted(&owner))
}

/// Refuses new connections to `database` and ends its sessions, waiting for them to be gone.
async fn fence(server: &mut PgConnection, database: &str) -> Result<(), SnapshotError> {
    let action = "close the database's sessions";
    execute(
        server,
        action,
        &format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            quoted(database)
        ),
    )
    .await?;
    // All signalled at once, then watched closely: `pg_terminate_backend(pid, timeout)` waits
    // for each in turn, 0.1 s at a time (1.3 s for the 14 sessions of a `serve`).
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .execute(&mut *server)
    .await
    .map_err(failed(action))?;
    let deadline = Instant::now() + SESSIONS_END_WITHIN;
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(database)
        .fetch_one(&mut *server)
        .await
        .map_err(failed(action))?;
        // Past the deadline the copy or the rename reports the sessions still there.
        if left == 0 || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn unfence(server: &mut PgConnection, database: &str) -> Result<(), SnapshotError> {
    execute(
        server,
        "allow connections to the database again",
        &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", quoted(database)),
    )
    .await
}

async fn save(
    server: &mut PgConnection,
    dev: &str,
    target: &str,
    mark: &Mark,
) -> Result<(), SnapshotError> {
    drop_leftovers(server).await?;
    if exists(server, target).await? {
        return Err(SnapshotError::Exists(
            target.trim_start_matches(PREFIX).to_owned(),
        ));
    }
    let owner = owner_of(server, dev).await?;
    let copy = format!(
        "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY OWNER {owner}",
        quoted(target),
        quoted(dev)
    );
    let copied = match fence(server, dev).await {
        Ok(()) => execute(server, "copy the database", &copy).await,
        Err(error) => Err(error),
    };
    unfence(server, dev).await?;
    copied?;
    let comment = serde_json::to_string(mark).unwrap_or_default();
    let marked = execute(
        server,
        "mark the snapshot",
        &format!(
            "COMMENT ON DATABASE {target} IS '{}'; ALTER DATABASE {target} ALLOW_CONNECTIONS false",
            comment.replace('\'', "''"),
            target = quoted(target),
        ),
    )
    .await;
    if marked.is_err() {
        drop_quietly(server, target).await;
    }
    marked
}

async fn restore(server: &mut PgConnection, dev: &str, name: &str) -> Result<(), SnapshotError> {
    drop_leftovers(server).await?;
    let source = format!("{PREFIX}{name}");
    if !exists(server, &source).await? {
        return Err(SnapshotError::NotFound(name.to_owned()));
    }
    let ready = format!("{READY}{name}");
    let owner = owner_of(server, dev).await?;
    let swapped = if exists(server, &ready).await? {
        // Not swapped in, it stays ready.
        swap(server, dev, &ready, &owner).await
    } else {
        let copied = execute(
            server,
            "copy the snapshot",
            &format!(
                "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY OWNER {owner}",
                quoted(INCOMING),
                quoted(&source)
            ),
        )
        .await;
        let swapped = match copied {
            Ok(()) => swap(server, dev, INCOMING, &owner).await,
            Err(error) => Err(error),
        };
        if swapped.is_err() {
            drop_quietly(server, INCOMING).await;
        }
        swapped
    };
    swapped?;
    if let Err(error) = execute(
        server,
        "drop the replaced database",
        &format!("DROP DATABASE {} WITH (FORCE)", quoted(OUTGOING)),
    )
    .await
    {
        // Restored all the same; the next operation drops it.
        warn!("{error}");
    }
    Ok(())
}

/// Fences the dev database and swaps `incoming` in for it in one transaction, open to
/// connections and owned by `owner` as the dev database was; on failure the dev database is open
/// again as it was.
async fn swap(
    server: &mut PgConnection,
    dev: &str,
    incoming: &str,
    owner: &str,
) -> Result<(), SnapshotError> {
    fence(server, dev).await?;
    let renamed = execute(
        server,
        "put the restored database in place",
        &format!(
            "BEGIN; ALTER DATABASE {dev} RENAME TO {outgoing}; \
             ALTER DATABASE {incoming} RENAME TO {dev}; \
             ALTER DATABASE {dev} ALLOW_CONNECTIONS true; ALTER DATABASE {dev} OWNER TO {owner}; \
             COMMIT",
            dev = quoted(dev),
            outgoing = quoted(OUTGOING),
            incoming = quoted(incoming),
        ),
    )
    .await;
    if renamed.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *server).await;
        unfence(server, dev).await?;
    }
    renamed
}

/// Copies the snapshot `name` as its ready copy: under a temporary name, renamed once complete,
/// so that a copy cut short is never taken for a ready one.
async fn make_ready_copy(server: &mut PgConnection, name: &str) -> Result<(), SnapshotError> {
    let (source, making) = (format!("{PREFIX}{name}"), format!("{MAKING}{name}"));
    let owner = owner_of(server, &source).await?;
    execute(
        server,
        "copy the snapshot for its next restore",
        &format!(
            "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY OWNER {owner} \
             ALLOW_CONNECTIONS false",
            quoted(&making),
            quoted(&source)
        ),
    )
    .await?;
    let named = execute(
        server,
        "name the snapshot's ready copy",
        &format!(
            "ALTER DATABASE {} RENAME TO {}",
            quoted(&making),
            quoted(&format!("{READY}{name}"))
        ),
    )
    .await;
    if named.is_err() {
        drop_quietly(server, &making).await;
    }
    named
}

/// Drops what an interrupted operation left: a restore's copy or replaced database, a ready
/// copy not complete, a ready copy whose snapshot is gone. Run holding the snapshot lock, so
/// none of them is in use.
async fn drop_leftovers(server: &mut PgConnection) -> Result<(), SnapshotError> {
    let action = "drop the leftovers of an interrupted snapshot operation";
    let leftovers: Vec<String> = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database leftover \
         WHERE datname IN ($1, $2) OR starts_with(datname, $3) \
            OR (starts_with(datname, $4) AND NOT EXISTS (SELECT FROM pg_database snapshot \
                WHERE snapshot.datname = $5 || substr(leftover.datname, $6)))",
    )
    .bind(INCOMING)
    .bind(OUTGOING)
    .bind(MAKING)
    .bind(READY)
    .bind(PREFIX)
    .bind(i32::try_from(READY.len() + 1).unwrap_or(i32::MAX))
    .fetch_all(&mut *server)
    .await
    .map_err(failed(action))?;
    for leftover in leftovers {
        execute(
            server,
            action,
            &format!("DROP DATABASE IF EXISTS {}", quoted(&leftover)),
        )
        .await?;
    }
    Ok(())
}

/// Drops `database` if it exists, after a failure that is reported instead.
async fn drop_quietly(server: &mut PgConnection, database: &str) {
    let statement = format!("DROP DATABASE IF EXISTS {}", quoted(database));
    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(server)
        .await
    {
        warn!(database, "cannot drop the unfinished copy: {error}");
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
