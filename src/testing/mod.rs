//! Test databases: every test gets its own, migrated, in milliseconds.
//!
//! ```no_run
//! use pgharness::testing::{TestDb, db};
//! use rstest::rstest;
//!
//! #[rstest]
//! #[tokio::test]
//! async fn users_start_empty(#[future(awt)] db: TestDb) {
//!     let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
//!         .fetch_one(db.pool())
//!         .await
//!         .unwrap();
//!     assert_eq!(count, 0);
//! }
//! ```
//!
//! How: one embedded server per test run, shared by every test process ([`shared`]); per
//! migration set a template database, built once and kept until the migrations change; each test
//! database a `FILE_COPY` clone of it. A background thread keeps a few clones ready (prefetch)
//! and drops finished databases off the tests' critical path.

pub mod shared;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rstest::fixture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

#[cfg(feature = "server")]
use crate::api::{ApiContext, Application};
use crate::config::{ConfigError, DatabaseUrl, Environment, PoolSettings};
use crate::database::Database;
use crate::migrations::{MigrationError, Migrations};

/// Clones kept ready per migration set (`PGHARNESS_TEST_PREFETCH`, default 2).
const DEFAULT_PREFETCH: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    #[error("fixture {name:?} not found: no file {path} (fixtures are looked up in {folder})")]
    MissingFixture {
        name: String,
        path: PathBuf,
        folder: PathBuf,
    },
    #[error("fixture {file} failed at line {line}: {message}")]
    Fixture {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("test database setup failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Binaries(#[from] crate::binaries::BinariesError),
    #[error(transparent)]
    Server(#[from] crate::embedded::ServerError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Which migrations and fixtures: the project's by default; another crate points at its own.
#[derive(Debug, Clone)]
pub struct TestDbBuilder {
    migrations_dir: Option<PathBuf>,
    fixtures_dir: PathBuf,
    fixtures: Vec<String>,
}

impl Default for TestDbBuilder {
    fn default() -> Self {
        Self {
            migrations_dir: None,
            fixtures_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures"),
            fixtures: Vec::new(),
        }
    }
}

impl TestDbBuilder {
    /// Migrations read from this directory instead of pgharness's own.
    #[must_use]
    pub fn migrations_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_dir = Some(dir.into());
        self
    }

    /// Where fixtures are looked up (default: pgharness's `fixtures/`).
    #[must_use]
    pub fn fixtures_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fixtures_dir = dir.into();
        self
    }

    /// SQL fixtures by name (`users` is `<fixtures_dir>/users.sql`), applied in this order.
    #[must_use]
    pub fn fixtures(mut self, names: &[&str]) -> Self {
        self.fixtures
            .extend(names.iter().map(|name| (*name).to_owned()));
        self
    }

    /// A fresh, migrated database with the fixtures applied.
    ///
    /// # Errors
    ///
    /// [`TestDbError`]: a missing fixture (naming file and folder), a failing one (file and
    /// line), or a server, migration or database failure.
    pub async fn build(self) -> Result<TestDb, TestDbError> {
        let migrations = match &self.migrations_dir {
            Some(dir) => Arc::new(Migrations::from_dir(dir).await?),
            None => embedded_migrations(),
        };
        let fixtures = self
            .fixtures
            .iter()
            .map(|name| read_fixture(&self.fixtures_dir, name))
            .collect::<Result<Vec<_>, _>>()?;
        let worker = worker().await?;
        let (reply, answer) = oneshot::channel();
        worker
            .requests
            .send(Request::Take { migrations, reply })
            .map_err(|_| TestDbError::Setup("the test database worker stopped".to_owned()))?;
        let name = answer
            .await
            .map_err(|_| TestDbError::Setup("the test database worker stopped".to_owned()))??;
        let database = TestDb::new(name, &worker.admin, worker.requests.clone());
        for (file, sql) in fixtures {
            apply_fixture(&database, &file, &sql).await?;
        }
        Ok(database)
    }
}

fn embedded_migrations() -> Arc<Migrations> {
    static EMBEDDED: OnceLock<Arc<Migrations>> = OnceLock::new();
    Arc::clone(EMBEDDED.get_or_init(|| Arc::new(Migrations::embedded())))
}

fn read_fixture(folder: &Path, name: &str) -> Result<(PathBuf, String), TestDbError> {
    let path = folder.join(format!("{name}.sql"));
    match std::fs::read_to_string(&path) {
        Ok(sql) => Ok((path, sql)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(TestDbError::MissingFixture {
                name: name.to_owned(),
                path,
                folder: folder.to_owned(),
            })
        }
        Err(source) => Err(TestDbError::Io {
            action: "cannot read",
            path,
            source,
        }),
    }
}

async fn apply_fixture(database: &TestDb, file: &Path, sql: &str) -> Result<(), TestDbError> {
    let mut connection = database.connect().await?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await;
    let _ = connection.close().await;
    match result {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) => Err(TestDbError::Fixture {
            file: file.to_owned(),
            line: crate::migrations::error_line(sql, error.as_ref()).unwrap_or(1),
            message: error.message().to_owned(),
        }),
        Err(other) => Err(other.into()),
    }
}

/// An isolated, migrated database on the shared test server; dropped (in the background)
/// when this value is.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: DatabaseUrl,
    pool: PgPool,
    requests: mpsc::UnboundedSender<Request>,
}

impl TestDb {
    fn new(name: String, admin: &DatabaseUrl, requests: mpsc::UnboundedSender<Request>) -> Self {
        let url = admin.with_database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_lazy_with(url.connect_options());
        Self {
            name,
            url,
            pool,
            requests,
        }
    }

    /// The project's migrations, no fixtures.
    ///
    /// # Errors
    ///
    /// As [`TestDbBuilder::build`].
    pub async fn new_migrated() -> Result<Self, TestDbError> {
        TestDbBuilder::default().build().await
    }

    /// To choose migrations and fixtures.
    #[must_use]
    pub fn builder() -> TestDbBuilder {
        TestDbBuilder::default()
    }

    /// A pool on this database (connects on first use).
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's URL (the password is masked when displayed).
    #[must_use]
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A dedicated connection, outside the pool.
    ///
    /// # Errors
    ///
    /// [`sqlx::Error`] when connecting fails.
    pub async fn connect(&self) -> Result<PgConnection, sqlx::Error> {
        PgConnection::connect_with(&self.url.connect_options()).await
    }

    /// A pgharness [`Database`] on this database, with the testing pool preset.
    #[must_use]
    pub fn database(&self) -> Database {
        let (size, overflow) = Environment::Testing.pool_preset();
        Database::connect_lazy(
            &self.url,
            &PoolSettings {
                size,
                max_overflow: overflow,
                timeout: std::time::Duration::from_secs(30),
                recycle: std::time::Duration::from_secs(3600),
                echo: false,
                slow_statement: std::time::Duration::from_secs(1),
            },
        )
    }
}

impl Drop for TestDb {
    /// Hands the database to the background thread: never blocks the test's runtime.
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Drop(self.name.clone()));
    }
}

/// A test database with the project's migrations (rstest fixture; `#[future(awt)] db: TestDb`).
/// With fixtures: `#[future(awt)] #[with(&["users"])] db: TestDb`.
///
/// # Panics
///
/// When no database can be had: the test cannot run (the message says why).
#[fixture]
pub async fn db(#[default(&[])] fixtures: &[&str]) -> TestDb {
    match TestDb::builder().fixtures(fixtures).build().await {
        Ok(database) => database,
        Err(error) => panic!("{error}"),
    }
}

/// The HTTP API on a test's own database.
#[cfg(feature = "server")]
#[derive(Debug)]
pub struct TestApp {
    pub db: TestDb,
    pub database: Database,
    pub router: axum::Router,
}

#[cfg(feature = "server")]
impl TestApp {
    /// The API on `db` (database control routes answer 403: the shared server is not yours).
    #[must_use]
    pub fn on(db: TestDb) -> Self {
        let database = db.database();
        let context = ApiContext::new(
            database.clone(),
            Environment::Testing,
            db.url().clone(),
            None,
            embedded_migrations(),
        );
        Self {
            router: crate::api::router(context),
            database,
            db,
        }
    }

    /// Serves the API on a free local port for tests that need a socket; returns its base URL.
    /// The server runs until the test's runtime ends.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn serve(&self) -> Result<String, crate::api::BindError> {
        let context = ApiContext::new(
            self.database.clone(),
            Environment::Testing,
            self.db.url().clone(),
            None,
            embedded_migrations(),
        );
        let application = Application::bind(context, "127.0.0.1", 0).await?;
        let address = application
            .local_addr()
            .map_err(|source| crate::api::BindError::Other {
                address: "127.0.0.1:0".to_owned(),
                source,
            })?;
        tokio::spawn(application.run_until(std::future::pending()));
        Ok(format!("http://{address}"))
    }
}

/// The API on a fresh migrated database (rstest fixture; `#[future(awt)] app: TestApp`).
///
/// # Panics
///
/// When no database can be had.
#[cfg(feature = "server")]
#[fixture]
pub async fn app() -> TestApp {
    TestApp::on(db(&[]).await)
}

enum Request {
    Take {
        migrations: Arc<Migrations>,
        reply: oneshot::Sender<Result<String, TestDbError>>,
    },
    Drop(String),
}

/// The background thread's handle.
struct Worker {
    admin: DatabaseUrl,
    requests: mpsc::UnboundedSender<Request>,
}

/// Attaches to the shared server once per process and starts the background thread.
async fn worker() -> Result<&'static Worker, TestDbError> {
    static WORKER: tokio::sync::OnceCell<Worker> = tokio::sync::OnceCell::const_new();
    WORKER
        .get_or_try_init(|| async {
            let admin = shared::attach().await?;
            let (requests, receiver) = mpsc::unbounded_channel();
            let thread_admin = admin.clone();
            std::thread::Builder::new()
                .name("pgharness-test-databases".to_owned())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(serve_requests(thread_admin, receiver)),
                        Err(error) => warn!(%error, "no runtime for the test database thread"),
                    }
                })
                .map_err(|error| TestDbError::Setup(error.to_string()))?;
            Ok(Worker { admin, requests })
        })
        .await
}

/// Ready clones of one template.
#[derive(Default)]
struct Stock {
    template: Option<String>,
    ready: VecDeque<String>,
}

/// The background thread's state: one admin connection, stocks per migration set, databases
/// waiting to be dropped.
struct Stocks {
    admin: DatabaseUrl,
    connection: Option<PgConnection>,
    stocks: HashMap<String, (Arc<Migrations>, Stock)>,
    drops: Vec<String>,
    prefetch: usize,
}

impl Stocks {
    async fn connection(&mut self) -> Result<&mut PgConnection, TestDbError> {
        if self.connection.is_none() {
            self.connection =
                Some(PgConnection::connect_with(&self.admin.connect_options()).await?);
        }
        self.connection
            .as_mut()
            .ok_or_else(|| TestDbError::Setup("no admin connection".to_owned()))
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Take { migrations, reply } => {
                let key = migrations.fingerprint();
                let ready = self
                    .stocks
                    .entry(key.clone())
                    .or_insert_with(|| (Arc::clone(&migrations), Stock::default()))
                    .1
                    .ready
                    .pop_front();
                let name = match ready {
                    Some(name) => Ok(name),
                    None => self.clone_for(&key).await,
                };
                let _ = reply.send(name);
            }
            Request::Drop(name) => self.drops.push(name),
        }
    }

    async fn clone_for(&mut self, key: &str) -> Result<String, TestDbError> {
        let admin = self.admin.clone();
        let (migrations, template) = match self.stocks.get(key) {
            Some((migrations, stock)) => (Arc::clone(migrations), stock.template.clone()),
            None => return Err(TestDbError::Setup("unknown migration set".to_owned())),
        };
        let connection = self.connection().await?;
        let template = match template {
            Some(template) => template,
            None => ensure_template(connection, &admin, &migrations, key).await?,
        };
        let name = clone_database(connection, &template).await;
        if let Some((_, stock)) = self.stocks.get_mut(key) {
            stock.template = Some(template);
        }
        name
    }

    /// One step of work nobody waits for: a prefetched clone, else a drop. `false` when idle.
    async fn background_step(&mut self) -> bool {
        let short = self
            .stocks
            .iter()
            .find(|(_, (_, stock))| stock.ready.len() < self.prefetch)
            .map(|(key, _)| key.clone());
        if let Some(key) = short {
            match self.clone_for(&key).await {
                Ok(name) => {
                    if let Some((_, stock)) = self.stocks.get_mut(&key) {
                        stock.ready.push_back(name);
                    }
                }
                Err(error) => {
                    warn!(%error, "could not prefetch a test database");
                    self.prefetch = 0;
                }
            }
            return true;
        }
        let Some(name) = self.drops.pop() else {
            return false;
        };
        match self.connection().await {
            Ok(connection) => drop_database(connection, &name).await,
            Err(error) => warn!(%error, database = name, "could not drop a test database"),
        }
        true
    }
}

async fn serve_requests(admin: DatabaseUrl, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut state = Stocks {
        admin,
        connection: None,
        stocks: HashMap::new(),
        drops: Vec::new(),
        prefetch: std::env::var("PGHARNESS_TEST_PREFETCH")
            .ok()
            .and_then(|count| count.parse().ok())
            .unwrap_or(DEFAULT_PREFETCH),
    };
    loop {
        // Requests first; background work only while nobody waits.
        while let Ok(request) = receiver.try_recv() {
            state.handle(request).await;
        }
        if state.background_step().await {
            continue;
        }
        match receiver.recv().await {
            Some(request) => state.handle(request).await,
            None => return,
        }
    }
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

async fn clone_database(
    connection: &mut PgConnection,
    template: &str,
) -> Result<String, TestDbError> {
    let name = format!(
        "{}{}_{}",
        shared::TEST_DATABASE_PREFIX,
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\" STRATEGY FILE_COPY"
    )))
    .execute(connection)
    .await?;
    Ok(name)
}

/// The template of a migration set: built once (across processes: under an advisory lock)
/// and kept until the migrations change.
async fn ensure_template(
    connection: &mut PgConnection,
    admin: &DatabaseUrl,
    migrations: &Migrations,
    key: &str,
) -> Result<String, TestDbError> {
    let template = format!("pgh_tpl_{}", &key[..16]);
    let lock_key = i64::from_str_radix(&key[..15], 16).unwrap_or(0);
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut *connection)
        .await?;
    let result = build_template(connection, admin, migrations, &template).await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(lock_key)
        .execute(&mut *connection)
        .await?;
    result.map(|()| template)
}

async fn build_template(
    connection: &mut PgConnection,
    admin: &DatabaseUrl,
    migrations: &Migrations,
    template: &str,
) -> Result<(), TestDbError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
    )
    .bind(template)
    .fetch_one(&mut *connection)
    .await?;
    if exists {
        return Ok(());
    }
    let building = format!("{template}_building");
    // One statement at a time: several in one string run as one transaction, which
    // CREATE and DROP DATABASE refuse.
    for statement in [
        format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
        format!("DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"),
        format!("CREATE DATABASE \"{building}\""),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin.with_database(&building).connect_options())
        .await?;
    let migrated = migrations.up(&pool, None).await;
    pool.close().await;
    migrated?;
    for statement in [
        format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\""),
        format!("ALTER DATABASE \"{template}\" IS_TEMPLATE true"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

async fn drop_database(connection: &mut PgConnection, name: &str) {
    let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    if let Err(error) = sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
        .execute(connection)
        .await
    {
        warn!(database = name, %error, "could not drop a test database");
    }
}
