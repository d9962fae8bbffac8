//! What `pgharness testdb serve` keeps track of: per template hash, its template database (and
//! who initializes it), its test databases (ready, handed out, being made), and the limit across
//! templates. Database names are short digests, so any hash fits PostgreSQL's 63 bytes; every
//! database has a login role of its own that owns it, so a handed-out role reaches no other.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::Notify;
use tracing::warn;

use crate::config::DatabaseUrl;
use crate::platform::{process, random};

/// Databases of `testdb serve` are named `<prefix><pid>_…`.
pub const SERVED_PREFIX: &str = "pgh_i_";
/// How long a template's initializer must have been gone before a finalize takes effect.
const SETTLE: Duration = Duration::from_millis(500);
/// The key of a template's hash in its database comment.
const HASH_MARK: &str = "integresql_hash";

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
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "SELECT datname, shobj_description(oid, 'pg_database'), pg_database_size(oid)
           FROM pg_database WHERE starts_with(datname, $1) ORDER BY datname",
    )
    .bind(SERVED_PREFIX)
    .fetch_all(connection)
    .await?;
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

/// How the service hands databases out.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// Test databases kept ready per finalized template.
    pub ready_per_template: usize,
    /// Test databases (ready, handed out or being made) across all templates.
    pub max_databases: usize,
    /// An initializer that has disconnected from its template without finalizing it loses it
    /// after this long (and one that never connects after ten times as long).
    pub abandon_after: Duration,
    /// How long `GET …/tests` waits for a template to be finalized.
    pub finalize_wait: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            ready_per_template: 3,
            max_databases: 100,
            abandon_after: Duration::from_secs(10),
            finalize_wait: Duration::from_secs(60),
        }
    }
}

/// Why a request cannot be served: an HTTP status and a sentence naming the hash or id.
#[derive(Debug)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, and what to do.
    pub detail: String,
}

fn refuse(status: u16, detail: impl Into<String>) -> Refusal {
    Refusal {
        status,
        detail: detail.into(),
    }
}

impl From<sqlx::Error> for Refusal {
    fn from(error: sqlx::Error) -> Self {
        refuse(500, format!("the test server failed: {error}"))
    }
}

/// Connection settings of one database, as IntegreSQL's clients read them.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseConfig {
    /// Always loopback.
    pub host: String,
    /// The shared test server's port.
    pub port: u16,
    /// The database's own role.
    pub username: String,
    /// Its password.
    pub password: String,
    /// The database's name.
    pub database: String,
}

#[derive(Debug)]
enum Status {
    Initializing(Initializing),
    Finalized,
    Discarded(String),
}

#[derive(Debug)]
struct Initializing {
    since: Instant,
    /// A finalize arrived (maybe from a caller that got 423, before the initializer is done).
    finalize_requested: Option<Instant>,
    /// The initializer has connected to the template at least once.
    connected: bool,
    /// When a session on the template was last seen.
    last_seen: Instant,
    /// Being finalized now (by a finalize request or the watch, never both).
    finalizing: bool,
}

#[derive(Debug)]
struct Template {
    /// The template database's name, and its initializer's role.
    name: String,
    status: Status,
    next_id: u32,
    ready: VecDeque<u32>,
    handed: BTreeMap<u32, Instant>,
    creating: usize,
    passwords: HashMap<u32, String>,
}

impl Template {
    fn database(&self, id: u32) -> String {
        format!("{}_{id}", self.name)
    }

    fn count(&self) -> usize {
        self.ready.len() + self.handed.len() + self.creating
    }
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

/// The served templates and their test databases, on the shared test server.
pub struct Service {
    admin: DatabaseUrl,
    pool: PgPool,
    prefix: String,
    settings: PoolSettings,
    templates: Mutex<HashMap<String, Template>>,
    generation: std::sync::atomic::AtomicU64,
    /// A template changed state (waiters look again).
    changed: Notify,
    /// A test database was taken or freed (the refiller looks again).
    refill: Notify,
    /// The refiller and the initializers' watch, stopped at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Requests waiting in `GET …/tests` for a template to be finalized.
    waiting: std::sync::atomic::AtomicUsize,
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

async fn execute(pool: &PgPool, statement: String) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(pool)
        .await
        .map(drop)
}

impl Service {
    /// The service on the shared server whose superuser URL is `admin`; databases left by
    /// `testdb serve` processes that are gone are dropped first.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] when the server cannot be reached.
    pub async fn start(
        admin: DatabaseUrl,
        settings: PoolSettings,
    ) -> Result<Arc<Self>, sqlx::Error> {
        // Roles made here store their password with one SCRAM round, as the server's own
        // superuser does: each test connection saves ~10 ms on both ends.
        let options = admin.connect_options().options([("scram_iterations", "1")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let service = Arc::new(Self {
            admin,
            pool,
            prefix: format!("{SERVED_PREFIX}{}_", std::process::id()),
            settings,
            templates: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            changed: Notify::new(),
            refill: Notify::new(),
            background: Mutex::new(Vec::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        });
        service
            .drop_leftovers(|prefix| {
                prefix
                    .strip_prefix(SERVED_PREFIX)
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|pid| pid.parse().ok())
                    .is_none_or(|pid| !process::is_alive(pid))
            })
            .await?;
        let background = [
            tokio::spawn(Arc::clone(&service).watch_initializers()),
            // Two at a time: the server copies one clone's files while the other's role and
            // ownership are set up.
            tokio::spawn(Arc::clone(&service).keep_ready()),
            tokio::spawn(Arc::clone(&service).keep_ready()),
        ];
        service
            .background
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(background);
        Ok(service)
    }

    /// Answers the requests waiting for a template (503) and stops the background work after
    /// its current step: what a stopping server does first.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed.notify_waiters();
        self.refill.notify_waiters();
    }

    /// Stops the background work, then drops every database and role this process made.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] when the server cannot be asked.
    pub async fn shutdown(&self) -> Result<(), sqlx::Error> {
        let background = std::mem::take(
            &mut *self
                .background
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        // Each ends after its current step: a clone cut off half-way would outlive the drops.
        self.stop();
        for task in background {
            let _ = task.await;
        }
        self.forget_all().await
    }

    /// Forgets every template and drops every database and role this process made.
    async fn forget_all(&self) -> Result<(), sqlx::Error> {
        self.lock().clear();
        self.changed.notify_waiters();
        let own = self.prefix.clone();
        self.drop_leftovers(|name| name.starts_with(&own)).await
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Template>> {
        self.templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Databases, then roles, of `testdb serve` whose name `doomed` accepts.
    async fn drop_leftovers(&self, doomed: impl Fn(&str) -> bool) -> Result<(), sqlx::Error> {
        for name in self
            .served("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .await?
        {
            let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&name));
            if doomed(&name)
                && let Err(error) = execute(&self.pool, statement).await
            {
                warn!(database = name, %error, "could not drop a served test database");
            }
        }
        for name in self
            .served("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
            .await?
        {
            let statement = format!("DROP ROLE IF EXISTS {}", quote(&name));
            if doomed(&name)
                && let Err(error) = execute(&self.pool, statement).await
            {
                warn!(role = name, %error, "could not drop a test role");
            }
        }
        Ok(())
    }

    /// Names of `testdb serve`'s databases or roles, as `query` lists them.
    async fn served(&self, query: &'static str) -> Result<Vec<String>, sqlx::Error> {
        sqlx::query_scalar(query)
            .bind(format!("{SERVED_PREFIX}%"))
            .fetch_all(&self.pool)
            .await
    }

    /// Drops a database and its role (same name); failures are only logged.
    async fn drop_database(&self, name: &str) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(name));
        if let Err(error) = execute(&self.pool, statement).await {
            warn!(database = name, %error, "could not drop a served test database");
        }
        let statement = format!("DROP ROLE IF EXISTS {}", quote(name));
        match execute(&self.pool, statement).await {
            Ok(()) => {}
            // A template's role still owns the objects of a clone being made (dependent
            // objects, 2BP01): dropped with the rest at shutdown.
            Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("2BP01") => {}
            Err(error) => warn!(role = name, %error, "could not drop a served test role"),
        }
    }

    fn config(&self, database: &str, password: &str) -> DatabaseConfig {
        DatabaseConfig {
            host: self.admin.host.clone(),
            port: self.admin.port,
            username: database.to_owned(),
            password: password.to_owned(),
            database: database.to_owned(),
        }
    }

    /// `POST /templates`: the template's connection for the first caller, 423 for the others.
    ///
    /// # Errors
    ///
    /// 423 when the hash is initialized or being initialized; 500 when the server fails.
    pub async fn initialize(&self, hash: &str) -> Result<DatabaseConfig, Refusal> {
        let (name, password) = {
            let mut templates = self.lock();
            if let Some(template) = templates.get(hash) {
                match &template.status {
                    Status::Initializing(_) => {
                        return Err(refuse(
                            423,
                            format!(
                                "template {hash} is being initialized by another caller: wait for it with GET /api/v1/templates/{hash}/tests"
                            ),
                        ));
                    }
                    Status::Finalized => {
                        return Err(refuse(
                            423,
                            format!("template {hash} is already initialized"),
                        ));
                    }
                    Status::Discarded(_) => {}
                }
            }
            let name = self.name_for(hash);
            let password =
                random::alphanumeric(24).map_err(|error| refuse(500, error.to_string()))?;
            templates.insert(
                hash.to_owned(),
                Template {
                    name: name.clone(),
                    status: Status::Initializing(Initializing {
                        since: Instant::now(),
                        finalize_requested: None,
                        connected: false,
                        last_seen: Instant::now(),
                        finalizing: false,
                    }),
                    next_id: 0,
                    ready: VecDeque::new(),
                    handed: BTreeMap::new(),
                    creating: 0,
                    passwords: HashMap::new(),
                },
            );
            (name, password)
        };
        let made = self.create_template(hash, &name, &password).await;
        if let Err(error) = made {
            self.lock().remove(hash);
            self.drop_database(&name).await;
            return Err(error.into());
        }
        Ok(self.config(&name, &password))
    }

    fn name_for(&self, hash: &str) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(hash.as_bytes());
        let hex: String = digest
            .iter()
            .take(6)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}{generation}_{hex}", self.prefix)
    }

    /// The template database, its hash in its comment (for `pgharness testdb list`).
    async fn create_template(
        &self,
        hash: &str,
        name: &str,
        password: &str,
    ) -> Result<(), sqlx::Error> {
        self.create_owned(name, password, "TEMPLATE template0")
            .await?;
        let comment = serde_json::to_string(&json!({ HASH_MARK: hash })).unwrap_or_default();
        execute(
            &self.pool,
            format!(
                "COMMENT ON DATABASE {} IS {}",
                quote(name),
                literal(&comment)
            ),
        )
        .await
    }

    /// A database and a login role of the same name that owns it, which no other role may
    /// connect to.
    async fn create_owned(
        &self,
        name: &str,
        password: &str,
        source: &str,
    ) -> Result<(), sqlx::Error> {
        let database = quote(name);
        for statement in [
            format!(
                "CREATE ROLE {database} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION \
                 PASSWORD {}",
                literal(password)
            ),
            format!("CREATE DATABASE {database} OWNER {database} {source}"),
            format!("REVOKE ALL ON DATABASE {database} FROM PUBLIC"),
        ] {
            execute(&self.pool, statement).await?;
        }
        Ok(())
    }

    /// `PUT /templates/{hash}`: finalized at once when its initializer has come and gone; else
    /// once it has (a caller that got 423 may finalize before the initializer is done).
    ///
    /// # Errors
    ///
    /// 404 for an unknown or discarded hash.
    pub async fn finalize(&self, hash: &str) -> Result<(), Refusal> {
        {
            let mut templates = self.lock();
            let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
            match &mut template.status {
                Status::Finalized => return Ok(()),
                Status::Discarded(reason) => {
                    return Err(refuse(
                        404,
                        format!("template {hash} was discarded ({reason})"),
                    ));
                }
                Status::Initializing(initializing) => {
                    initializing
                        .finalize_requested
                        .get_or_insert_with(Instant::now);
                }
            }
        }
        self.check_initializer(hash).await?;
        Ok(())
    }

    /// `DELETE /templates/{hash}`: its template and test databases are dropped.
    ///
    /// # Errors
    ///
    /// 404 for an unknown or already discarded hash.
    pub async fn discard(&self, hash: &str) -> Result<(), Refusal> {
        let doomed = self.discard_as(hash, "discarded by a client".to_owned())?;
        for name in doomed {
            self.drop_database(&name).await;
        }
        Ok(())
    }

    /// Marks `hash` discarded; the databases to drop.
    fn discard_as(&self, hash: &str, reason: String) -> Result<Vec<String>, Refusal> {
        let mut templates = self.lock();
        let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
        if let Status::Discarded(reason) = &template.status {
            return Err(refuse(
                404,
                format!("template {hash} was already discarded ({reason})"),
            ));
        }
        template.status = Status::Discarded(reason);
        let ids: Vec<u32> = template
            .ready
            .drain(..)
            .chain(std::mem::take(&mut template.handed).into_keys())
            .collect();
        let mut doomed: Vec<String> = ids.into_iter().map(|id| template.database(id)).collect();
        template.passwords.clear();
        doomed.push(template.name.clone());
        drop(templates);
        self.changed.notify_waiters();
        Ok(doomed)
    }

    /// `DELETE /admin/templates`: every template and test database dropped.
    ///
    /// # Errors
    ///
    /// 500 when the server fails.
    pub async fn reset(&self) -> Result<(), Refusal> {
        self.forget_all().await?;
        Ok(())
    }

    /// `GET /templates/{hash}/tests`: waits until the template is finalized, then hands out a
    /// test database of its own.
    ///
    /// # Errors
    ///
    /// 404 unknown, 410 discarded, 503 not finalized in time, 507 at the limit.
    pub async fn take(&self, hash: &str) -> Result<(u32, DatabaseConfig), Refusal> {
        self.wait_finalized(hash).await?;
        loop {
            let reserved = {
                let mut templates = self.lock();
                let total: usize = templates.values().map(Template::count).sum();
                let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
                if let Status::Discarded(reason) = &template.status {
                    return Err(gone(hash, reason));
                }
                if let Some(id) = template.ready.pop_front() {
                    template.handed.insert(id, Instant::now());
                    let config = self.config(
                        &template.database(id),
                        template.passwords.get(&id).map_or("", String::as_str),
                    );
                    drop(templates);
                    self.refill.notify_waiters();
                    return Ok((id, config));
                }
                (total < self.settings.max_databases).then(|| reserve(template))
            };
            match reserved {
                Some(id) => {
                    let config = self.make_test_database(hash, id).await?;
                    let discarded = {
                        let mut templates = self.lock();
                        let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
                        template.creating -= 1;
                        match &template.status {
                            Status::Discarded(reason) => Some(gone(hash, reason)),
                            _ => {
                                template.handed.insert(id, Instant::now());
                                None
                            }
                        }
                    };
                    if let Some(refusal) = discarded {
                        self.drop_database(&config.database).await;
                        return Err(refusal);
                    }
                    self.refill.notify_waiters();
                    return Ok((id, config));
                }
                None => {
                    if !self.make_room().await? {
                        return Err(refuse(
                            507,
                            format!(
                                "all {} test databases (--max-databases) are in use: give back \
                                 the ones no test uses (POST …/tests/{{id}}/unlock), close their \
                                 connections, or raise --max-databases",
                                self.settings.max_databases
                            ),
                        ));
                    }
                }
            }
        }
    }

    async fn wait_finalized(&self, hash: &str) -> Result<(), Refusal> {
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let waited = self.wait_finalized_counted(hash).await;
        self.waiting
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        waited
    }

    async fn wait_finalized_counted(&self, hash: &str) -> Result<(), Refusal> {
        let deadline = tokio::time::Instant::now() + self.settings.finalize_wait;
        loop {
            let changed = self.changed.notified();
            if self.stopping() {
                return Err(refuse(503, "testdb serve is stopping"));
            }
            {
                let templates = self.lock();
                let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
                match &template.status {
                    Status::Finalized => return Ok(()),
                    Status::Discarded(reason) => {
                        return Err(gone(hash, reason));
                    }
                    Status::Initializing(_) => {}
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(refuse(
                    503,
                    format!(
                        "template {hash} was not finalized within {} s: its initializer has not \
                         sent PUT /api/v1/templates/{hash}",
                        self.settings.finalize_wait.as_secs()
                    ),
                ));
            }
        }
    }

    /// At the limit: drops a ready database, else the oldest handed-out one nobody is
    /// connected to (a finished test's). Whether there is room now.
    async fn make_room(&self) -> Result<bool, Refusal> {
        let ready = {
            let mut templates = self.lock();
            templates.values_mut().find_map(|template| {
                let id = template.ready.pop_back()?;
                template.passwords.remove(&id);
                Some(template.database(id))
            })
        };
        if let Some(name) = ready {
            self.drop_database(&name).await;
            return Ok(true);
        }
        let mut handed: Vec<(Instant, String, u32, String)> = self
            .lock()
            .iter()
            .flat_map(|(hash, template)| {
                template
                    .handed
                    .iter()
                    .map(|(id, at)| (*at, hash.clone(), *id, template.database(*id)))
            })
            .collect();
        handed.sort();
        let names: Vec<String> = handed.iter().map(|(.., name)| name.clone()).collect();
        let connected: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT datname FROM pg_stat_activity WHERE datname = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        for (_, hash, id, name) in handed {
            if connected.contains(&name) {
                continue;
            }
            let removed = self.lock().get_mut(&hash).is_some_and(|template| {
                template.passwords.remove(&id);
                template.handed.remove(&id).is_some()
            });
            if removed {
                self.drop_database(&name).await;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes test database `id` of `hash` (reserved: counted in `creating`).
    async fn make_test_database(&self, hash: &str, id: u32) -> Result<DatabaseConfig, Refusal> {
        let (template, name) = {
            let templates = self.lock();
            let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
            (template.name.clone(), template.database(id))
        };
        let password = random::alphanumeric(24).map_err(|error| refuse(500, error.to_string()))?;
        if let Err(error) = self.clone_template(&template, &name, &password).await {
            self.drop_database(&name).await;
            if let Some(template) = self.lock().get_mut(hash) {
                template.creating -= 1;
            }
            return Err(error.into());
        }
        if let Some(template) = self.lock().get_mut(hash) {
            template.passwords.insert(id, password.clone());
        }
        Ok(self.config(&name, &password))
    }

    /// A clone owned by a new role of its own, which also owns everything in it.
    async fn clone_template(
        &self,
        template: &str,
        name: &str,
        password: &str,
    ) -> Result<(), sqlx::Error> {
        let database = quote(name);
        self.create_owned(
            name,
            password,
            &format!("TEMPLATE {} STRATEGY FILE_COPY", quote(template)),
        )
        .await?;
        let mut inside =
            PgConnection::connect_with(&self.admin.with_database(name).connect_options()).await?;
        let reassigned = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "REASSIGN OWNED BY {} TO {database}",
            quote(template)
        )))
        .execute(&mut inside)
        .await;
        let _ = inside.close().await;
        reassigned.map(drop)
    }

    /// `POST …/tests/{id}/unlock` (and the deprecated `DELETE …/tests/{id}`): an unmodified
    /// database back to the ready ones, handed out next.
    ///
    /// # Errors
    ///
    /// 404 unknown hash or id, 423 while connections are open on it.
    pub async fn unlock(&self, hash: &str, id: u32) -> Result<(), Refusal> {
        let name = self.handed_out(hash, id)?;
        self.refuse_if_connected(&name, hash, id).await?;
        let mut templates = self.lock();
        let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
        if template.handed.remove(&id).is_none() {
            return Err(not_handed_out(hash, id));
        }
        template.ready.push_front(id);
        Ok(())
    }

    /// `POST …/tests/{id}/recreate`: the database made again from the template, then ready.
    ///
    /// # Errors
    ///
    /// As [`Service::unlock`].
    pub async fn recreate(self: &Arc<Self>, hash: &str, id: u32) -> Result<(), Refusal> {
        let name = self.handed_out(hash, id)?;
        self.refuse_if_connected(&name, hash, id).await?;
        {
            let mut templates = self.lock();
            let template = templates.get_mut(hash).ok_or_else(|| unknown(hash))?;
            if template.handed.remove(&id).is_none() {
                return Err(not_handed_out(hash, id));
            }
            template.passwords.remove(&id);
            template.creating += 1;
        }
        let service = Arc::clone(self);
        let hash = hash.to_owned();
        tokio::spawn(async move {
            service.drop_database(&name).await;
            if service.make_test_database(&hash, id).await.is_ok() {
                service.made_ready(&hash, id, &name).await;
            }
        });
        Ok(())
    }

    fn handed_out(&self, hash: &str, id: u32) -> Result<String, Refusal> {
        let templates = self.lock();
        let template = templates.get(hash).ok_or_else(|| unknown(hash))?;
        if template.handed.contains_key(&id) {
            Ok(template.database(id))
        } else {
            Err(not_handed_out(hash, id))
        }
    }

    /// 423 while connections are open on `name`. A client that has just closed its last one
    /// is given a moment: the server ends a session a little after the client hangs up.
    async fn refuse_if_connected(&self, name: &str, hash: &str, id: u32) -> Result<(), Refusal> {
        let grace = Instant::now() + Duration::from_secs(2);
        loop {
            let sessions: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                    .bind(name)
                    .fetch_one(&self.pool)
                    .await?;
            if sessions == 0 {
                return Ok(());
            }
            if Instant::now() > grace {
                return Err(refuse(
                    423,
                    format!(
                        "test database {id} of template {hash} still has {sessions} open \
                         connection(s): close them first"
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A database made in the background joins the ready ones, unless its template has gone.
    async fn made_ready(&self, hash: &str, id: u32, name: &str) {
        let kept = {
            let mut templates = self.lock();
            match templates.get_mut(hash) {
                Some(template) if template.database(id) == name => {
                    template.creating -= 1;
                    if matches!(template.status, Status::Finalized) {
                        template.ready.push_back(id);
                        true
                    } else {
                        false
                    }
                }
                _ => false,
            }
        };
        if !kept {
            self.drop_database(name).await;
        }
    }

    /// Keeps `ready_per_template` test databases ready per finalized template (one of the two
    /// workers doing so).
    async fn keep_ready(self: Arc<Self>) {
        while !self.stopping() {
            // Listening before looking: a take between the two still wakes this.
            let refill = self.refill.notified();
            tokio::pin!(refill);
            refill.as_mut().enable();
            let wanted = {
                let mut templates = self.lock();
                let total: usize = templates.values().map(Template::count).sum();
                let room = total < self.settings.max_databases;
                templates
                    .iter_mut()
                    .find(|(_, template)| {
                        matches!(template.status, Status::Finalized)
                            && template.ready.len() + template.creating
                                < self.settings.ready_per_template
                    })
                    .filter(|_| room)
                    .map(|(hash, template)| {
                        let id = reserve(template);
                        (hash.clone(), id, template.database(id))
                    })
            };
            match wanted {
                Some((hash, id, name)) => match self.make_test_database(&hash, id).await {
                    Ok(_) => self.made_ready(&hash, id, &name).await,
                    Err(refusal) => {
                        // A template discarded meanwhile fails its clone: nothing to report.
                        let still_served = self
                            .lock()
                            .get(&hash)
                            .is_some_and(|template| matches!(template.status, Status::Finalized));
                        if still_served {
                            warn!(detail = refusal.detail, "could not prepare a test database");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                },
                None => refill.await,
            }
        }
    }

    /// Watches templates being initialized: finalizes a requested one once its initializer has
    /// come and gone, and discards one whose initializer went away without finalizing it.
    async fn watch_initializers(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while !self.stopping() {
            tick.tick().await;
            let initializing: Vec<String> = self
                .lock()
                .iter()
                .filter(|(_, template)| matches!(template.status, Status::Initializing(_)))
                .map(|(hash, _)| hash.clone())
                .collect();
            for hash in initializing {
                if let Err(refusal) = self.check_initializer(&hash).await {
                    warn!(
                        hash,
                        detail = refusal.detail,
                        "could not check a template's initializer"
                    );
                }
            }
        }
    }

    async fn check_initializer(&self, hash: &str) -> Result<(), Refusal> {
        let Some(name) = self.lock().get(hash).map(|template| template.name.clone()) else {
            return Ok(());
        };
        // Sessions now, those of them busy (in a statement or transaction, or idle only
        // briefly), and every session the database has had (counted when one ends): a short one
        // between two looks still counts.
        let (open, busy, ended): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = $1),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = $1
                        AND (state <> 'idle' OR state_change > now() - make_interval(secs => $2))),
                    coalesce((SELECT sessions FROM pg_stat_database WHERE datname = $1), 0)",
        )
        .bind(&name)
        .bind(self.settings.abandon_after.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        enum Verdict {
            Wait,
            Finalize { terminate: bool },
            Abandon(String),
        }
        let verdict = {
            let mut templates = self.lock();
            let Some(template) = templates.get_mut(hash) else {
                return Ok(());
            };
            let Status::Initializing(state) = &mut template.status else {
                return Ok(());
            };
            if state.finalizing {
                return Ok(());
            }
            if open > 0 {
                state.connected = true;
                state.last_seen = Instant::now();
            } else if ended > 0 {
                state.connected = true;
            }
            let abandon = self.settings.abandon_after;
            let verdict = match state.finalize_requested {
                // A finalize may come from a caller that got 423 while the initializer works
                // (the Python client's `with` block): it takes effect once the initializer has
                // been connected and gone for a moment (not between two of its connections).
                Some(requested)
                    if open == 0
                        && ((state.connected && state.last_seen.elapsed() >= SETTLE)
                            || requested.elapsed() > abandon) =>
                {
                    Verdict::Finalize { terminate: false }
                }
                // Finished but still connected (a pool kept its connection), idle that long:
                // its sessions would block every clone.
                Some(requested) if open > 0 && busy == 0 && requested.elapsed() > abandon => {
                    Verdict::Finalize { terminate: true }
                }
                Some(_) => Verdict::Wait,
                None if state.connected && open == 0 && state.last_seen.elapsed() > abandon => {
                    Verdict::Abandon(format!(
                        "its initializer disconnected without finalizing it for {} s",
                        abandon.as_secs()
                    ))
                }
                None if !state.connected && state.since.elapsed() > abandon * 10 => {
                    Verdict::Abandon(format!(
                        "its initializer never connected to it in {} s",
                        (abandon * 10).as_secs()
                    ))
                }
                None => Verdict::Wait,
            };
            state.finalizing = matches!(verdict, Verdict::Finalize { .. });
            verdict
        };
        match verdict {
            Verdict::Wait => Ok(()),
            Verdict::Abandon(reason) => {
                warn!(hash, reason, "discarded a template");
                if let Ok(doomed) = self.discard_as(hash, reason) {
                    for name in doomed {
                        self.drop_database(&name).await;
                    }
                }
                Ok(())
            }
            Verdict::Finalize { terminate } => {
                let role = quote(&name);
                let mut statements = vec![format!("ALTER ROLE {role} NOLOGIN")];
                if terminate {
                    statements.push(format!(
                        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = {}",
                        literal(&name)
                    ));
                }
                // Nobody connects to it any more (a connection would block clones); its
                // objects keep their owner, whose role is reassigned in each clone.
                statements.push(format!(
                    "ALTER DATABASE {role} OWNER TO {}",
                    quote(&self.admin.username)
                ));
                statements.push(format!("ALTER DATABASE {role} ALLOW_CONNECTIONS false"));
                let mut finalized = Ok(());
                for statement in statements {
                    finalized = execute(&self.pool, statement).await;
                    if finalized.is_err() {
                        break;
                    }
                }
                if let Some(template) = self.lock().get_mut(hash)
                    && let Status::Initializing(state) = &mut template.status
                {
                    if finalized.is_ok() {
                        template.status = Status::Finalized;
                    } else {
                        // Tried again on the next look.
                        state.finalizing = false;
                    }
                }
                finalized?;
                self.changed.notify_waiters();
                self.refill.notify_waiters();
                Ok(())
            }
        }
    }

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
        sqlx::query_scalar(
            "SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database WHERE starts_with(datname, $1)",
        )
        .bind(&self.prefix)
        .fetch_one(&self.pool)
        .await
    }
}

fn reserve(template: &mut Template) -> u32 {
    let id = template.next_id;
    template.next_id += 1;
    template.creating += 1;
    id
}

fn unknown(hash: &str) -> Refusal {
    refuse(
        404,
        format!("template {hash} not found: initialize it first with POST /api/v1/templates"),
    )
}

fn gone(hash: &str, reason: &str) -> Refusal {
    refuse(410, format!("template {hash} was discarded ({reason})"))
}

fn not_handed_out(hash: &str, id: u32) -> Refusal {
    refuse(
        404,
        format!("test database {id} of template {hash} not found: it is not handed out"),
    )
}
