//! A test's own database ([`TestDb`]), its builder and the rstest fixture [`db`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rstest::fixture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection as _, PgConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::pooled;
use super::server::{self, KeepPolicy, TestServerError, TestSettings};
use super::worker::{Request, TemplateSpec, worker};
use crate::config::{DatabaseUrl, Environment, PoolSettings};
use crate::database::Database;
use crate::fixtures;
use crate::migrations::{MigrationError, Migrations};

/// Why a test database cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    #[error(
        "CARGO_MANIFEST_DIR is not set, so the migrations of the crate under test cannot be \
         found. Run the tests through cargo, or name the folder: \
         TestDb::builder().migrations_dir(..) or PGHARNESS_TEST_MIGRATIONS_DIR"
    )]
    /// `CARGO_MANIFEST_DIR` is unset and no migrations directory was named.
    NoCrateDir,
    #[error(
        "the migrations folder {path} was not found (working directory {cwd}). Create it, or \
         point the tests at yours with TestDb::builder().migrations_dir(..) or \
         PGHARNESS_TEST_MIGRATIONS_DIR"
    )]
    /// The migrations directory does not exist.
    MissingMigrations {
        /// The directory (absolute).
        path: PathBuf,
        /// The working directory.
        cwd: PathBuf,
    },
    /// A fixture is missing or failed.
    #[error(transparent)]
    Fixture(#[from] crate::fixtures::FixtureError),
    #[error(
        "migration {file} failed at line {line}: {message}. Fix the file in {dir}; the next test \
         builds the template again"
    )]
    /// A migration failed while the template was built.
    MigrationFailed {
        /// Its file.
        file: String,
        /// The line of the failing statement.
        line: usize,
        /// The server's message.
        message: String,
        /// The migrations directory.
        dir: PathBuf,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The background thread stopped.
    #[error("the test database thread of this process has stopped (see the error before)")]
    WorkerStopped,
    /// A migration set that was never registered.
    #[error("a test database was asked for a migration set the worker does not know")]
    UnknownMigrationSet,
    /// The configuration the test API is assembled with is refused.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The shared test server failed.
    #[error(transparent)]
    TestServer(#[from] TestServerError),
    /// The migrations cannot be read.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// A statement failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The pool of the `pgharness testdb serve` that `PGHARNESS_TEST_POOL_URL` names failed.
    #[error("the test database pool at {url} (PGHARNESS_TEST_POOL_URL) {detail}")]
    Pool {
        /// The pool's root URL.
        url: String,
        /// What it answered, or why it cannot be reached.
        detail: String,
    },
}

/// Which migrations and fixtures: the calling crate's by default.
#[derive(Debug, Clone, Default)]
pub struct TestDbBuilder {
    migrations_dir: Option<PathBuf>,
    fixtures_dir: Option<PathBuf>,
    fixtures: Vec<String>,
    bake: bool,
}

impl TestDbBuilder {
    /// Migrations read from this directory instead of `<crate>/migrations`.
    #[must_use]
    pub fn migrations_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.migrations_dir = Some(dir.into());
        self
    }

    /// Where fixtures are looked up instead of `<crate>/fixtures`.
    #[must_use]
    pub fn fixtures_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.fixtures_dir = Some(dir.into());
        self
    }

    /// SQL fixtures by name (`users` is `<fixtures_dir>/users.sql`), applied in this order.
    #[must_use]
    pub fn fixtures(mut self, names: &[&str]) -> Self {
        self.fixtures
            .extend(names.iter().map(|name| (*name).to_owned()));
        self
    }

    /// The fixtures baked into a template of their own (built once, like the migrations'),
    /// instead of applied to each test's database: for fixtures many tests share, or large
    /// ones. The result is the same database, except what the fixture takes from the clock
    /// (`now()` is the template's build time) and sequences, which continue from the fixture.
    #[must_use]
    pub fn bake(mut self) -> Self {
        self.bake = true;
        self
    }

    /// A fresh, migrated database with the fixtures applied.
    ///
    /// # Errors
    ///
    /// [`TestDbError`]: migrations or a fixture not found (naming the path), a failing
    /// migration or fixture (file and line), or a server failure.
    pub async fn build(self) -> Result<TestDb, TestDbError> {
        let settings = TestSettings::get();
        let migrations_dir = in_crate(
            self.migrations_dir,
            settings.migrations_dir.as_ref(),
            "migrations",
        )?;
        let migrations = migrations_for(&migrations_dir).await?;
        let mut fixtures = if self.fixtures.is_empty() {
            Vec::new()
        } else {
            let folder = in_crate(
                self.fixtures_dir,
                settings.fixtures_dir.as_ref(),
                "fixtures",
            )?;
            self.fixtures
                .iter()
                .map(|name| fixtures::read(&folder, name))
                .collect::<Result<Vec<_>, _>>()?
        };
        let worker = worker().await?;
        let (reply, answer) = oneshot::channel();
        worker
            .requests
            .send(Request::Take {
                spec: TemplateSpec {
                    migrations,
                    baked: Arc::new(if self.bake {
                        std::mem::take(&mut fixtures)
                    } else {
                        Vec::new()
                    }),
                },
                reply,
            })
            .map_err(|_| TestDbError::WorkerStopped)?;
        let name = answer.await.map_err(|_| TestDbError::WorkerStopped)??;
        let database = TestDb {
            url: worker.admin.with_database(&name),
            admin: worker.admin.clone(),
            pooled: worker.pooled,
            name,
            pool: OnceLock::new(),
            requests: worker.requests.clone(),
        };
        if !fixtures.is_empty() {
            let mut connection = database.connect().await?;
            for fixture in &fixtures {
                fixtures::apply(&mut connection, fixture).await?;
            }
            let _ = connection.close().await;
        }
        Ok(database)
    }
}

impl TestDbBuilder {
    /// As [`TestDbBuilder::build`], without `.await`: built on a thread and runtime of its own,
    /// so it works with or without a runtime around it (the `db` fixture uses it, so that a test
    /// needs no `#[future(awt)]`).
    ///
    /// # Errors
    ///
    /// As [`TestDbBuilder::build`].
    pub fn build_blocking(self) -> Result<TestDb, TestDbError> {
        on_own_runtime(async move { self.build().await }).unwrap_or(Err(TestDbError::WorkerStopped))
    }
}

/// The explicit folder, else the variable's, else `<crate>/<leaf>`: never another crate's.
fn in_crate(
    explicit: Option<PathBuf>,
    variable: Option<&PathBuf>,
    leaf: &str,
) -> Result<PathBuf, TestDbError> {
    explicit
        .or_else(|| variable.cloned())
        .or_else(|| {
            TestSettings::get()
                .crate_dir
                .as_ref()
                .map(|dir| dir.join(leaf))
        })
        .ok_or(TestDbError::NoCrateDir)
}

/// Migrations of a folder, read once per process.
async fn migrations_for(dir: &Path) -> Result<Arc<Migrations>, TestDbError> {
    static LOADED: tokio::sync::Mutex<Vec<(PathBuf, Arc<Migrations>)>> =
        tokio::sync::Mutex::const_new(Vec::new());
    let mut loaded = LOADED.lock().await;
    if let Some((_, migrations)) = loaded.iter().find(|(path, _)| path == dir) {
        return Ok(Arc::clone(migrations));
    }
    if !dir.is_dir() {
        return Err(TestDbError::MissingMigrations {
            path: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            cwd: std::env::current_dir().unwrap_or_default(),
        });
    }
    let migrations = Arc::new(Migrations::from_dir(dir).await?);
    loaded.push((dir.to_owned(), Arc::clone(&migrations)));
    Ok(migrations)
}

/// An isolated, migrated database on the shared test server. Dropped (in the background)
/// with this value, or kept when its test panicked.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: DatabaseUrl,
    admin: DatabaseUrl,
    /// Handed out by a `pgharness testdb serve`'s pool.
    pooled: bool,
    /// Made on first use, so that a `TestDb` can be built without a runtime.
    pool: OnceLock<PgPool>,
    requests: mpsc::UnboundedSender<Request>,
}

impl TestDb {
    /// The calling crate's migrations, no fixtures: one line in a plain `#[tokio::test]`.
    ///
    /// # Errors
    ///
    /// As [`TestDbBuilder::build`].
    pub async fn new() -> Result<Self, TestDbError> {
        TestDbBuilder::default().build().await
    }

    /// As [`TestDb::new`], without `.await`: for a plain `#[test]`, or any code that cannot
    /// await.
    ///
    /// # Errors
    ///
    /// As [`TestDbBuilder::build`].
    pub fn new_blocking() -> Result<Self, TestDbError> {
        TestDbBuilder::default().build_blocking()
    }

    /// To choose migrations and fixtures.
    #[must_use]
    pub fn builder() -> TestDbBuilder {
        TestDbBuilder::default()
    }

    /// A pool on this database. It connects on first use, in the runtime that uses it: the
    /// getter itself works in any context, in a runtime or not.
    pub fn pool(&self) -> &PgPool {
        self.pool.get_or_init(|| {
            // No idle or lifetime limit: sqlx would spawn the task enforcing them here, which
            // needs a runtime; a test's pool lives no longer than its test anyway.
            PgPoolOptions::new()
                .max_connections(5)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(self.url.connect_options())
        })
    }

    /// The database's URL (the password is masked when displayed).
    #[must_use]
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// A URL `psql` opens as it is; the password stays in the run directory's `pgpass`.
    #[must_use]
    pub fn psql_url(&self) -> String {
        server::psql_url(&self.admin, &self.name)
    }

    /// The database's name.
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
        Database::connect_lazy(&self.url, &PoolSettings::preset(Environment::Testing))
    }
}

impl Drop for TestDb {
    /// Kept when its test panicked (by default), with one line saying how to open it; else
    /// handed to the background thread, which drops it soon, and at the latest when the process
    /// ends.
    fn drop(&mut self) {
        let settings = TestSettings::get();
        let failed = std::thread::panicking();
        let keep = match settings.keep {
            KeepPolicy::Always => true,
            KeepPolicy::Failed => failed,
            KeepPolicy::Never => false,
        };
        if keep {
            let test = std::thread::current().name().unwrap_or("a test").to_owned();
            let (admin, name, kept_test) = (self.admin.clone(), self.name.clone(), test.clone());
            let pooled = self.pooled;
            let kept = on_own_runtime(async move {
                // One from a pool leaves it first, to outlive the pool like any kept database.
                let name = if pooled {
                    pooled::take_out(&admin, &name).await?
                } else {
                    name
                };
                server::keep(&admin, &name, &kept_test).await?;
                Ok::<_, TestDbError>(name)
            });
            match kept {
                Some(Ok(name)) => eprintln!(
                    "pgharness: kept the database of {test} for inspection: psql '{}' \
                     (`pgharness testdb psql {name}` once the idle test server has stopped, \
                     `pgharness testdb drop {name}`, `pgharness testdb list`)",
                    server::psql_url(&self.admin, &name),
                ),
                other => warn!(
                    database = self.name,
                    ?other,
                    "could not keep a test database"
                ),
            }
            return;
        }
        // Closed first: a connection the test has just released is then closed on its way
        // back, instead of pinged there after its database was dropped under it (which sqlx
        // reports as a warning in the test's log).
        if let Some(pool) = self.pool.get() {
            drop(pool.close());
        }
        let _ = self.requests.send(Request::Drop(self.name.clone()));
    }
}

/// Runs `work` to completion on a thread and runtime of its own: for callers with no runtime,
/// or inside one that must not be blocked on (`Drop`). `None` if that thread failed.
fn on_own_runtime<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Option<T> {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .map(|runtime| runtime.block_on(work))
    })
    .join()
    .ok()
    .flatten()
}

/// A test database with the calling crate's migrations (rstest fixture; `db: TestDb`, in sync
/// and async tests alike). With fixtures: `#[with(&["users"])] db: TestDb`.
///
/// # Panics
///
/// When no database can be had: the test cannot run (the message says why).
#[fixture]
pub fn db(#[default(&[])] fixtures: &[&str]) -> TestDb {
    match TestDb::builder().fixtures(fixtures).build_blocking() {
        Ok(database) => database,
        Err(error) => panic!("{error}"),
    }
}
