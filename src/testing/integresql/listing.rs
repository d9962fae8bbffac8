//! What is served, for people: every `testdb serve`'s templates as the server shows them, and
//! one service's counts, waiters and disk use.

use serde::Serialize;
use sqlx::PgConnection;

use super::databases::HASH_MARK;
use super::pool::{SERVED_PREFIX, Service, Status};

/// A template a running `testdb serve` holds, as the server shows it.
#[derive(Debug, Clone)]
pub struct ServedTemplate {
    /// The `testdb serve` process.
    pub pid: u32,
    /// The client's hash.
    pub hash: String,
    /// The template database.
    pub database: String,
    /// Its test databases (ready or handed out).
    pub test_databases: usize,
    /// Bytes on disk, template and test databases.
    pub bytes: i64,
}

/// The templates of every `testdb serve` on the shared server, by hash.
///
/// # Errors
///
/// [`sqlx::Error`] when the server cannot be asked.
pub async fn served_templates(
    connection: &mut PgConnection,
) -> Result<Vec<ServedTemplate>, sqlx::Error> {
    let named: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT datname, shobj_description(oid, 'pg_database')
           FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(SERVED_PREFIX)
    .fetch_all(&mut *connection)
    .await?;
    let mut rows = Vec::with_capacity(named.len());
    for (name, comment) in named {
        let bytes = size_of(connection, &name).await;
        rows.push((name, comment, bytes));
    }
    let mut templates: Vec<ServedTemplate> = rows
        .iter()
        .filter_map(|(name, comment, bytes)| {
            let comment: serde_json::Value = serde_json::from_str(comment.as_deref()?).ok()?;
            Some(ServedTemplate {
                pid: name
                    .strip_prefix(SERVED_PREFIX)?
                    .split('_')
                    .next()?
                    .parse()
                    .ok()?,
                hash: comment.get(HASH_MARK)?.as_str()?.to_owned(),
                database: name.clone(),
                test_databases: 0,
                bytes: *bytes,
            })
        })
        .collect();
    for template in &mut templates {
        let clones = rows.iter().filter(|(name, ..)| {
            name.strip_prefix(template.database.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
                .is_some_and(|id| id.parse::<u32>().is_ok())
        });
        for (_, _, bytes) in clones {
            template.test_databases += 1;
            template.bytes += bytes;
        }
    }
    Ok(templates)
}

/// A template's counts, for the overview.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateSummary {
    /// The client's hash.
    pub hash: String,
    /// Its database.
    pub database: String,
    /// `initializing`, `finalized` or `discarded`.
    pub state: &'static str,
    /// Test databases ready to be handed out.
    pub ready: usize,
    /// Test databases handed out and not given back.
    pub handed_out: usize,
}

impl Service {
    /// The served templates, for the overview.
    #[must_use]
    pub fn summary(&self) -> Vec<TemplateSummary> {
        let mut summary: Vec<TemplateSummary> = self
            .lock()
            .iter()
            .map(|(hash, template)| TemplateSummary {
                hash: hash.clone(),
                database: template.name.clone(),
                state: match template.status {
                    Status::Initializing(_) => "initializing",
                    Status::Finalized => "finalized",
                    Status::Discarded(_) => "discarded",
                },
                ready: template.ready.len(),
                handed_out: template.handed.len(),
            })
            .collect();
        summary.sort_by(|a, b| a.hash.cmp(&b.hash));
        summary
    }

    /// Requests waiting for a template to be finalized.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes on disk of this process's databases.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] when the server cannot be asked.
    pub async fn disk_use(&self) -> Result<i64, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(&self.prefix)
                .fetch_all(&mut *connection)
                .await?;
        let mut bytes = 0;
        for name in names {
            bytes += size_of(&mut connection, &name).await;
        }
        Ok(bytes)
    }
}

/// A database's bytes on disk; 0 for one dropped meanwhile (a clone a pool recycles as it is
/// listed), which would fail a query sizing every database at once.
async fn size_of(connection: &mut PgConnection, database: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_database_size($1::text)")
        .bind(database)
        .fetch_one(connection)
        .await
        .unwrap_or(0)
}
