//! A process that runs a single test (nextest's process per test) cannot keep clones ready for
//! its next test: there is none. With `PGHARNESS_TEST_POOL_URL` (set by `pgharness testdb run`)
//! it takes its database from that `pgharness testdb serve`'s pool instead, which keeps clones
//! ready across processes. It speaks `IntegreSQL`'s API, as every other language's client does;
//! the first process to ask for a template migrates it. It connects as the shared server's
//! superuser, like every other Rust test (the superuser's URL is in the run directory, which the
//! process can read anyway), so a test behaves the same wherever its database came from.

use std::time::Duration;

use serde::Deserialize;
use sqlx::{Connection as _, PgConnection};

use super::TestDbError;
use super::server::TEST_DATABASE_PREFIX;
use super::template::{bake, migrate};
use super::worker::TemplateSpec;
use crate::config::DatabaseUrl;

/// The pool's client: a small blocking HTTP client, run off the async threads.
pub(super) struct PoolClient {
    /// The server's root, `http://host:port`.
    root: String,
    agent: ureq::Agent,
}

/// A database handed out by the pool.
pub(super) struct Handout {
    /// The template's hash, in the pool's terms.
    pub hash: String,
    /// The database's id in its template.
    pub id: u32,
    /// The database's name.
    pub name: String,
}

#[derive(Deserialize)]
struct Answer {
    database: HandedDatabase,
    #[serde(default)]
    id: u32,
}

#[derive(Deserialize)]
struct HandedDatabase {
    config: DatabaseConfig,
}

#[derive(Deserialize)]
struct DatabaseConfig {
    database: String,
}

#[derive(Deserialize)]
struct Refusal {
    detail: String,
}

impl PoolClient {
    pub(super) fn new(root: &str) -> Self {
        Self {
            root: root.to_owned(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(10)))
                .build()
                .new_agent(),
        }
    }

    /// A database cloned from `spec`'s template. The template is asked for first (one request
    /// once it exists); the first process to find it unknown initializes it: migrated as the
    /// superuser `admin`, with any baked fixtures, then finalized.
    pub(super) async fn take(
        &self,
        admin: &DatabaseUrl,
        spec: &TemplateSpec,
    ) -> Result<Handout, TestDbError> {
        let hash = hash_of(spec);
        let tests = format!("/api/v1/templates/{hash}/tests");
        let (status, body) = self.call("GET", &tests, None).await?;
        if status != 404 {
            return self.handout(&hash, status, &body);
        }
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/templates",
                Some(format!("{{\"hash\":\"{hash}\"}}")),
            )
            .await?;
        match status {
            200 => {
                let template = self.parse::<Answer>(&body)?.database.config.database;
                let filled = fill(&admin.with_database(&template), spec).await;
                if let Err(error) = filled {
                    let _ = self
                        .call("DELETE", &format!("/api/v1/templates/{hash}"), None)
                        .await;
                    return Err(error);
                }
                let (status, body) = self
                    .call("PUT", &format!("/api/v1/templates/{hash}"), None)
                    .await?;
                if status != 204 {
                    return Err(self.refused(status, &body));
                }
            }
            // Another process initializes it; the GET below waits until it is finalized.
            423 => {}
            _ => return Err(self.refused(status, &body)),
        }
        let (status, body) = self.call("GET", &tests, None).await?;
        self.handout(&hash, status, &body)
    }

    /// A finished test's database: dropped by the pool, which makes a fresh one ready. The pool
    /// refuses one with sessions open (423): a connection the test left behind (a pool whose
    /// runtime ended before it could close) is ended first, as a local drop would end it.
    pub(super) async fn give_back(
        &self,
        admin: &DatabaseUrl,
        handout: &Handout,
    ) -> Result<(), TestDbError> {
        let path = format!(
            "/api/v1/templates/{}/tests/{}/recreate",
            handout.hash, handout.id
        );
        let (mut status, mut body) = self.call("POST", &path, None).await?;
        if status == 423 {
            let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
            sqlx::query(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&handout.name)
            .execute(&mut connection)
            .await?;
            let _ = connection.close().await;
            (status, body) = self.call("POST", &path, None).await?;
        }
        if status == 204 {
            Ok(())
        } else {
            Err(self.refused(status, &body))
        }
    }

    fn handout(&self, hash: &str, status: u16, body: &str) -> Result<Handout, TestDbError> {
        if status != 200 {
            return Err(self.refused(status, body));
        }
        let answer = self.parse::<Answer>(body)?;
        Ok(Handout {
            hash: hash.to_owned(),
            id: answer.id,
            name: answer.database.config.database,
        })
    }

    /// `method path` with a JSON body or none: the status and the body.
    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<(u16, String), TestDbError> {
        let agent = self.agent.clone();
        let url = format!("{}{path}", self.root);
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let response = match (method, body) {
                ("GET", _) => agent.get(&url).call(),
                ("PUT", _) => agent.put(&url).send_empty(),
                ("DELETE", _) => agent.delete(&url).call(),
                (_, Some(body)) => agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .send(body),
                (_, None) => agent.post(&url).send_empty(),
            };
            let mut response = response.map_err(|error| unreachable_pool(&root, &error))?;
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .read_to_string()
                .map_err(|error| unreachable_pool(&root, &error))?;
            Ok((status, body))
        })
        .await
        .map_err(|error| TestDbError::Pool {
            url: self.root.clone(),
            detail: error.to_string(),
        })?
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, body: &str) -> Result<T, TestDbError> {
        serde_json::from_str(body).map_err(|error| TestDbError::Pool {
            url: self.root.clone(),
            detail: format!("answered what is not IntegreSQL's API ({error})"),
        })
    }

    fn refused(&self, status: u16, body: &str) -> TestDbError {
        let detail = serde_json::from_str::<Refusal>(body).map_or_else(
            |_| format!("answered {status}"),
            |refusal| format!("answered {status}: {}", refusal.detail),
        );
        TestDbError::Pool {
            url: self.root.clone(),
            detail,
        }
    }
}

/// A failed test's database out of the pool, to be kept: its sessions ended, renamed as this
/// process's own test database and owned by the superuser, so it outlives the pool (which drops
/// what it made when it stops) and is listed, kept and expired like any other. Its new name.
pub(super) async fn take_out(admin: &DatabaseUrl, name: &str) -> Result<String, TestDbError> {
    let kept = format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
        std::process::id(),
        name.rsplit('_').next().unwrap_or("0")
    );
    let mut connection = PgConnection::connect_with(&admin.connect_options()).await?;
    sqlx::query("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut connection)
        .await?;
    for statement in [
        format!("ALTER DATABASE \"{name}\" RENAME TO \"{kept}\""),
        format!("ALTER DATABASE \"{kept}\" OWNER TO \"{}\"", admin.username),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut connection)
            .await?;
    }
    let _ = connection.close().await;
    Ok(kept)
}

/// The template's hash in the pool: the migrations' fingerprint and the baked fixtures' digest,
/// marked as pgharness's, in the characters `IntegreSQL` hashes use.
fn hash_of(spec: &TemplateSpec) -> String {
    use sha2::Digest as _;
    format!("pgharness-{:x}", sha2::Sha256::digest(spec.key()))
}

/// The template migrated, with the baked fixtures applied.
async fn fill(template: &DatabaseUrl, spec: &TemplateSpec) -> Result<(), TestDbError> {
    migrate(template, &spec.migrations).await?;
    if !spec.baked.is_empty() {
        bake(template, &spec.baked).await?;
    }
    Ok(())
}

fn unreachable_pool(root: &str, error: &ureq::Error) -> TestDbError {
    TestDbError::Pool {
        url: root.to_owned(),
        detail: format!(
            "cannot be reached ({error}): start it with `pgharness testdb run -- …`, which sets \
             PGHARNESS_TEST_POOL_URL, or unset the variable"
        ),
    }
}
