//! The statements on the cluster behind snapshots: the lock, listing, fencing the dev
//! database, copying, swapping names, and tidying what an interrupted operation left.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use tracing::warn;

use super::{
    INCOMING, LOCK_KEY, MAKING, Mark, OUTGOING, PREFIX, READY, SESSIONS_END_WITHIN, Snapshot,
    SnapshotError, failed,
};
use crate::config::DatabaseUrl;
use crate::database::sql;
use crate::dev_data::server_connection;

/// A connection to the server's `postgres` database holding the snapshot lock (given up when
/// the connection closes).
pub(super) async fn locked_server(url: &DatabaseUrl) -> Result<PgConnection, SnapshotError> {
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

pub(super) async fn list(server: &mut PgConnection) -> Result<Vec<Snapshot>, SnapshotError> {
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

pub(super) async fn exists(
    server: &mut PgConnection,
    database: &str,
) -> Result<bool, SnapshotError> {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(server)
        .await
        .map_err(failed("look the snapshot up"))
}

pub(super) async fn execute(
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
pub(super) async fn owner_of(
    server: &mut PgConnection,
    database: &str,
) -> Result<String, SnapshotError> {
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_one(server)
    .await
    .map_err(failed("find the owner of the database"))?;
    Ok(sql::identifier(&owner))
}

/// Refuses new connections to `database` and ends its sessions, waiting for them to be gone.
pub(super) async fn fence(server: &mut PgConnection, database: &str) -> Result<(), SnapshotError> {
    let action = "close the database's sessions";
    execute(
        server,
        action,
        &format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS false",
            sql::identifier(database)
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

pub(super) async fn unfence(
    server: &mut PgConnection,
    database: &str,
) -> Result<(), SnapshotError> {
    execute(
        server,
        "allow connections to the database again",
        &format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            sql::identifier(database)
        ),
    )
    .await
}

pub(super) async fn save(
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
        sql::identifier(target),
        sql::identifier(dev)
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
            "COMMENT ON DATABASE {target} IS {}; ALTER DATABASE {target} ALLOW_CONNECTIONS false",
            sql::literal(&comment),
            target = sql::identifier(target),
        ),
    )
    .await;
    if marked.is_err() {
        drop_quietly(server, target).await;
    }
    marked
}

pub(super) async fn restore(
    server: &mut PgConnection,
    dev: &str,
    name: &str,
) -> Result<(), SnapshotError> {
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
                sql::identifier(INCOMING),
                sql::identifier(&source)
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
        &format!("DROP DATABASE {} WITH (FORCE)", sql::identifier(OUTGOING)),
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
pub(super) async fn swap(
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
            dev = sql::identifier(dev),
            outgoing = sql::identifier(OUTGOING),
            incoming = sql::identifier(incoming),
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
pub(super) async fn make_ready_copy(
    server: &mut PgConnection,
    name: &str,
) -> Result<(), SnapshotError> {
    let (source, making) = (format!("{PREFIX}{name}"), format!("{MAKING}{name}"));
    let owner = owner_of(server, &source).await?;
    execute(
        server,
        "copy the snapshot for its next restore",
        &format!(
            "CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY OWNER {owner} \
             ALLOW_CONNECTIONS false",
            sql::identifier(&making),
            sql::identifier(&source)
        ),
    )
    .await?;
    let named = execute(
        server,
        "name the snapshot's ready copy",
        &format!(
            "ALTER DATABASE {} RENAME TO {}",
            sql::identifier(&making),
            sql::identifier(&format!("{READY}{name}"))
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
pub(super) async fn drop_leftovers(server: &mut PgConnection) -> Result<(), SnapshotError> {
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
            &format!("DROP DATABASE IF EXISTS {}", sql::identifier(&leftover)),
        )
        .await?;
    }
    Ok(())
}

/// Drops `database` if it exists, after a failure that is reported instead.
pub(super) async fn drop_quietly(server: &mut PgConnection, database: &str) {
    let statement = format!("DROP DATABASE IF EXISTS {}", sql::identifier(database));
    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(server)
        .await
    {
        warn!(database, "cannot drop the unfinished copy: {error}");
    }
}
