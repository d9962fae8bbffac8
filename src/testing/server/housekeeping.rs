//! What keeps the shared server from filling up: databases of finished processes dropped,
//! failed tests' databases kept for a while, templates of old migration sets and half-built
//! ones dropped. Marks live in database comments (JSON), so every process sees them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::{Connection as _, PgConnection};
use tracing::{info, warn};

use super::{TEMPLATE_PREFIX, TEST_DATABASE_PREFIX, TestSettings};
use crate::config::DatabaseUrl;
use crate::database::sql;
use crate::platform::process;

/// What a database's comment says about it.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Mark {
    /// The crate whose tests use it.
    #[serde(rename = "crate", default)]
    crate_name: String,
    /// Kept after its test (seconds since the epoch), for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept_at: Option<u64>,
    /// The test it belonged to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    test: Option<String>,
    /// A template's last first use by a process (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used_at: Option<u64>,
}

/// A test database kept after its test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptDatabase {
    /// The database's name.
    pub name: String,
    /// The test that kept it.
    pub test: String,
    /// The crate of that test.
    pub crate_name: String,
    /// When it was kept.
    pub kept_at: SystemTime,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

async fn set_mark(
    connection: &mut PgConnection,
    database: &str,
    mark: &Mark,
) -> Result<(), sqlx::Error> {
    let text = serde_json::to_string(mark).unwrap_or_default();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "COMMENT ON DATABASE \"{database}\" IS {}",
        sql::literal(&text)
    )))
    .execute(connection)
    .await?;
    Ok(())
}

/// Every pgharness database on the server, with its mark.
async fn marked(connection: &mut PgConnection) -> Result<Vec<(String, Mark)>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database
          WHERE starts_with(datname, 'pgh_') ORDER BY datname",
    )
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, comment)| {
            let mark = comment
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            (name, mark)
        })
        .collect())
}

/// Marks a test database as kept after `test`, so that no upkeep drops it before it expires.
///
/// # Errors
///
/// [`sqlx::Error`] from the server.
pub async fn keep(admin: &DatabaseUrl, database: &str, test: &str) -> Result<(), sqlx::Error> {
    let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
    let mark = Mark {
        crate_name: TestSettings::get().crate_name.clone(),
        kept_at: Some(now()),
        test: Some(test.to_owned()),
        used_at: None,
    };
    let result = set_mark(&mut connection, database, &mark).await;
    let _ = connection.close().await;
    result
}

/// Records that this process uses `template` now: the most recently used stay.
#[cfg(feature = "testing")]
pub(crate) async fn mark_template_used(
    connection: &mut PgConnection,
    template: &str,
) -> Result<(), sqlx::Error> {
    let mark = Mark {
        crate_name: TestSettings::get().crate_name.clone(),
        used_at: Some(now()),
        ..Mark::default()
    };
    set_mark(connection, template, &mark).await
}

/// The kept test databases, newest first.
///
/// # Errors
///
/// [`sqlx::Error`] from the server.
pub async fn kept_databases(admin: &DatabaseUrl) -> Result<Vec<KeptDatabase>, sqlx::Error> {
    let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
    let all = marked(&mut connection).await;
    let _ = connection.close().await;
    let mut kept: Vec<KeptDatabase> = all?
        .into_iter()
        .filter(|(name, _)| name.starts_with(TEST_DATABASE_PREFIX))
        .filter_map(|(name, mark)| {
            Some(KeptDatabase {
                name,
                kept_at: UNIX_EPOCH + Duration::from_secs(mark.kept_at?),
                test: mark.test.unwrap_or_default(),
                crate_name: mark.crate_name,
            })
        })
        .collect();
    kept.sort_by_key(|database| std::cmp::Reverse(database.kept_at));
    Ok(kept)
}

/// Drops a database, disconnecting whoever uses it.
///
/// # Errors
///
/// [`sqlx::Error`] from the server.
pub async fn drop_database(admin: &DatabaseUrl, database: &str) -> Result<(), sqlx::Error> {
    let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
    let result = drop_on(&mut connection, database).await;
    let _ = connection.close().await;
    result
}

pub(crate) async fn drop_on(
    connection: &mut PgConnection,
    database: &str,
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
    )))
    .execute(connection)
    .await?;
    Ok(())
}

/// The advisory lock held while the template of this name (or its `_building` database) is
/// built.
pub(crate) fn template_lock(template: &str) -> i64 {
    let key = template
        .strip_prefix(TEMPLATE_PREFIX)
        .unwrap_or(template)
        .get(..15)
        .unwrap_or("0");
    i64::from_str_radix(key, 16).unwrap_or(0)
}

/// The upkeep, run by each test process in the background once attached: drops
/// - test databases whose process is gone, unless kept;
/// - kept ones past `PGHARNESS_TEST_KEEP_HOURS`, or beyond the newest `PGHARNESS_TEST_KEEP_MAX`;
/// - `_building` databases nobody is building (their builder died);
/// - templates beyond the `PGHARNESS_TEST_TEMPLATES` most recently used of each crate, and
///   unmarked ones (an older pgharness's).
///
/// Returns how many databases it dropped.
///
/// # Errors
///
/// [`sqlx::Error`] when the server cannot be asked; single failed drops are only logged.
pub async fn tidy(connection: &mut PgConnection) -> Result<usize, sqlx::Error> {
    let databases = marked(connection).await?;
    let mut doomed = finished_test_databases(&databases);
    let mut dropped = 0;
    let mut templates: std::collections::HashMap<&str, Vec<(&String, u64)>> =
        std::collections::HashMap::new();
    for (name, mark) in &databases {
        if !name.starts_with(TEMPLATE_PREFIX) {
            continue;
        }
        if name.ends_with("_building") {
            if drop_if_abandoned(connection, name).await? {
                dropped += 1;
            }
            continue;
        }
        if mark.crate_name.is_empty() {
            // Unmarked: made by an older pgharness, whose template format is retired.
            doomed.push(name.clone());
            continue;
        }
        templates
            .entry(mark.crate_name.as_str())
            .or_default()
            .push((name, mark.used_at.unwrap_or(0)));
    }
    for (_, mut of_crate) in templates {
        of_crate.sort_by_key(|(_, used_at)| std::cmp::Reverse(*used_at));
        doomed.extend(
            of_crate
                .into_iter()
                .skip(TestSettings::get().templates_per_crate)
                .map(|(name, _)| name.clone()),
        );
    }
    for name in doomed {
        if retire(connection, &name).await {
            dropped += 1;
        }
    }
    if dropped > 0 {
        info!(dropped, "dropped left-over test databases");
    }
    Ok(dropped)
}

/// Test databases whose process is gone (unless kept), and kept ones past their age or count.
fn finished_test_databases(databases: &[(String, Mark)]) -> Vec<String> {
    let settings = TestSettings::get();
    let mut doomed = Vec::new();
    let mut kept: Vec<(&String, u64)> = Vec::new();
    for (name, mark) in databases {
        let Some(rest) = name.strip_prefix(TEST_DATABASE_PREFIX) else {
            continue;
        };
        if let Some(kept_at) = mark.kept_at {
            kept.push((name, kept_at));
        } else {
            let owner = rest.split('_').next().and_then(|pid| pid.parse().ok());
            if !owner.is_some_and(process::is_alive) {
                doomed.push(name.clone());
            }
        }
    }
    kept.sort_by_key(|(_, kept_at)| std::cmp::Reverse(*kept_at));
    let expired_before = now().saturating_sub(settings.keep_for.as_secs());
    for (index, (name, kept_at)) in kept.into_iter().enumerate() {
        if index >= settings.keep_max || kept_at < expired_before {
            doomed.push(name.clone());
        }
    }
    doomed
}

/// Drops `name` (a template is unmarked as one first); whether it is gone.
async fn retire(connection: &mut PgConnection, name: &str) -> bool {
    // A drop interrupted by a stop leaves the database invalid (`datconnlimit = -2`): ALTER on it
    // is a FATAL error that would end this connection, and only DROP is allowed.
    let invalid: bool = sqlx::query_scalar(
        "SELECT coalesce(bool_or(datconnlimit = -2), false) FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_one(&mut *connection)
    .await
    .unwrap_or(false);
    if invalid {
        // Not through ALTER (see above): the test server's superuser clears the flag itself, as
        // DROP refuses templates.
        let _ = sqlx::query("UPDATE pg_database SET datistemplate = false WHERE datname = $1")
            .bind(name)
            .execute(&mut *connection)
            .await;
    } else if name.starts_with(TEMPLATE_PREFIX) {
        let unmark = format!("ALTER DATABASE \"{name}\" IS_TEMPLATE false");
        if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(unmark))
            .execute(&mut *connection)
            .await
        {
            warn!(database = name, %error, "could not retire an old template");
            return false;
        }
    }
    match drop_on(connection, name).await {
        Ok(()) => true,
        Err(error) => {
            warn!(database = name, %error, "could not drop a left-over database");
            false
        }
    }
}

/// Drops a `_building` database whose build was abandoned (its builder died: the build lock is
/// free), holding that lock meanwhile so that no new build starts under it.
async fn drop_if_abandoned(
    connection: &mut PgConnection,
    building: &str,
) -> Result<bool, sqlx::Error> {
    let lock = template_lock(building);
    let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock)
        .fetch_one(&mut *connection)
        .await?;
    if !free {
        return Ok(false);
    }
    let dropped = drop_on(connection, building).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock)
        .execute(&mut *connection)
        .await?;
    dropped.map(|()| true)
}
