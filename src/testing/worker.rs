//! The background thread of a test process: one admin connection to the shared server, a
//! template per migration set, clones handed out (a few kept ready), finished databases dropped
//! and the server's upkeep done while no test waits.
//!
//! The life of a `TestDb`, and which thread does what:
//! 1. **Test thread** (the `db` fixture, `TestDb::builder().build_blocking()`): a thread and
//!    runtime of its own run `build`, which reads the crate's migrations and fixtures and sends
//!    [`Request::Take`] with a `TemplateSpec` over the process's `mpsc` channel to this thread,
//!    with a `oneshot` for the answer. The first request starts this thread.
//! 2. **This thread**, first request: `server::attach` (a shared lock on `users.lock` for
//!    the process's life; `start.lock` shared to read `state.json`, exclusive to start the server
//!    and spawn its watchdog). The connection that found the server is the admin connection.
//! 3. **This thread**: a ready clone of the spec, or a new one: `template::ensure_template`
//!    (advisory lock; build `<name>_building`, migrate, rename into a template), then
//!    `CREATE DATABASE pgh_t_<pid>_<n> TEMPLATE …`. The name goes back on the `oneshot`.
//! 4. **Test thread**: unbaked fixtures applied on a connection of its own; the test runs with a
//!    lazily opened pool on the database.
//! 5. **This thread**, while no request waits: housekeeping once, then prefetch clones.
//! 6. **Test thread**, `TestDb` dropped: kept (marked, one line to open it) if the test panicked,
//!    else its pool closed and [`Request::Drop`] sent; **this thread** drops the database from a
//!    task with its own connection (on the admin connection under nextest's process per test).
//! 7. **Process exit** (`#[dtor]`): [`Request::Flush`] drops the unused clones and waits for every
//!    queued drop, over a `std` `sync_channel` answered when they are done.
//!
//! Under nextest's process per test with `PGHARNESS_TEST_POOL_URL` (`pgharness testdb run`),
//! step 2 reads the server's URL without connecting, step 3 is one request to that pool
//! (`pooled.rs`; the first process migrates the template), 5 does nothing, and 6 gives the
//! database back to the pool, which drops it and makes a fresh one ready.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::TestDbError;
use super::pooled::{Handout, PoolClient};
use super::server::{self, TEST_DATABASE_PREFIX, TestSettings};
use super::template::{Recipe, ensure_template, template_name};
use crate::config::DatabaseUrl;
use crate::fixtures::{self, Fixture};
use crate::migrations::Migrations;

pub(super) enum Request {
    Take {
        spec: TemplateSpec,
        reply: oneshot::Sender<Result<String, TestDbError>>,
    },
    Drop(String),
    /// The process is ending: its ready clones are dropped too, none is made any more, and the
    /// answer comes once every drop is done.
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Work for the task that drops finished databases.
enum Finished {
    Drop(String),
    Flush(std::sync::mpsc::SyncSender<()>),
}

/// Which template a test database is cloned from: a migration set, with fixtures baked in or
/// not.
#[derive(Clone)]
pub(super) struct TemplateSpec {
    pub migrations: Arc<Migrations>,
    pub baked: Arc<Vec<Fixture>>,
}

impl TemplateSpec {
    pub(super) fn key(&self) -> String {
        if self.baked.is_empty() {
            self.migrations.fingerprint()
        } else {
            format!(
                "{}+{}",
                self.migrations.fingerprint(),
                fixtures::digest(&self.baked)
            )
        }
    }
}

/// The background thread's handle.
pub(super) struct Worker {
    pub admin: DatabaseUrl,
    pub requests: mpsc::UnboundedSender<Request>,
    /// Databases come from a `pgharness testdb serve`'s pool (see [`super::pooled`]).
    pub pooled: bool,
}

static WORKER: tokio::sync::OnceCell<Worker> = tokio::sync::OnceCell::const_new();

/// How long a process's end waits for its test databases to be dropped.
const FINAL_DROPS_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the background thread once per process; it attaches to the shared server on its own
/// runtime and keeps the connection that found the server alive as its admin connection.
pub(super) async fn worker() -> Result<&'static Worker, TestDbError> {
    WORKER
        .get_or_try_init(|| async {
            let (attached, attaching) = oneshot::channel();
            let (requests, receiver) = mpsc::unbounded_channel();
            let settings = TestSettings::get();
            let pool = settings
                .pool_url
                .as_deref()
                .filter(|_| settings.process_per_test)
                .map(PoolClient::new);
            let pooled = pool.is_some();
            std::thread::Builder::new()
                .name("pgharness-test-databases".to_owned())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime.block_on(async {
                            // From a pool, the server is found without a connection: the
                            // pool's process holds it running.
                            let found = match pool {
                                Some(_) => server::attach_running().map(|admin| (admin, None)),
                                None => server::attach().await.map(
                                    |server::Attached { admin, connection }| {
                                        (admin, Some(connection))
                                    },
                                ),
                            };
                            match found {
                                Ok((admin, connection)) => {
                                    let _ = attached.send(Ok(admin.clone()));
                                    serve_requests(admin, connection, pool, receiver).await;
                                }
                                Err(error) => {
                                    let _ = attached.send(Err(error));
                                }
                            }
                        }),
                        Err(error) => warn!(%error, "no runtime for the test database thread"),
                    }
                })
                .map_err(|source| thread_failed(Some(source)))?;
            let admin = attaching.await.map_err(|_| thread_failed(None))??;
            Ok(Worker {
                admin,
                requests,
                pooled,
            })
        })
        .await
}

fn thread_failed(source: Option<std::io::Error>) -> TestDbError {
    TestDbError::Io {
        action: "cannot start the test database thread for",
        path: TestSettings::get().run_dir.clone(),
        source: source.unwrap_or_else(|| std::io::Error::other("the thread ended")),
    }
}

/// Ready clones of one template.
#[derive(Default)]
struct Stock {
    template: Option<String>,
    ready: VecDeque<String>,
}

/// Where finished databases are dropped.
enum Dropper {
    /// A task with a connection of its own, beside the clones (see [`drop_finished`]).
    Task(mpsc::UnboundedSender<Finished>),
    /// The admin connection, when the process runs a single test (nextest's process per test):
    /// no clone can be waiting by then, and the process opens one connection fewer (5–7 ms of
    /// the server's CPU per test).
    Admin,
}

/// The background thread's state.
struct Stocks {
    admin: DatabaseUrl,
    connection: Option<PgConnection>,
    /// `server_version_num`, part of every template's key.
    server_version: Option<String>,
    by_template: HashMap<String, (TemplateSpec, Stock)>,
    drops: Dropper,
    prefetch: usize,
    tidied: bool,
    /// The pool databases come from, and those handed out to this process's tests by name.
    pool: Option<(PoolClient, HashMap<String, Handout>)>,
}

impl Stocks {
    async fn connection(&mut self) -> Result<&mut PgConnection, TestDbError> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => PgConnection::connect_with(&self.admin.connect_options()).await?,
        };
        let connection = self.connection.insert(connection);
        if self.server_version.is_none() {
            self.server_version = Some(
                sqlx::query_scalar("SELECT current_setting('server_version_num')")
                    .fetch_one(&mut *connection)
                    .await?,
            );
        }
        Ok(connection)
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Take { spec, reply } => {
                if let Some((pool, handed)) = &mut self.pool {
                    let taken = pool.take(&self.admin, &spec).await.map(|handout| {
                        let name = handout.name.clone();
                        handed.insert(name.clone(), handout);
                        name
                    });
                    let _ = reply.send(taken);
                    return;
                }
                let key = spec.key();
                let ready = self
                    .by_template
                    .entry(key.clone())
                    .or_insert_with(|| (spec, Stock::default()))
                    .1
                    .ready
                    .pop_front();
                let name = match ready {
                    Some(name) => Ok(name),
                    None => self.clone_for(&key).await,
                };
                let _ = reply.send(name);
            }
            Request::Drop(name) => self.retire(name).await,
            Request::Flush(reply) => {
                self.prefetch = 0;
                let unused: Vec<String> = self
                    .by_template
                    .values_mut()
                    .flat_map(|(_, stock)| stock.ready.drain(..))
                    .collect();
                for name in unused {
                    self.retire(name).await;
                }
                match &self.drops {
                    Dropper::Task(drops) => {
                        let _ = drops.send(Finished::Flush(reply));
                    }
                    Dropper::Admin => {
                        let _ = reply.send(());
                    }
                }
            }
        }
    }

    /// Drops a finished (or unused) database, or queues it for the drop task; one from the
    /// pool goes back to it.
    async fn retire(&mut self, name: String) {
        if let Some((pool, handed)) = &mut self.pool
            && let Some(handout) = handed.remove(&name)
        {
            if let Err(error) = pool.give_back(&self.admin, &handout).await {
                warn!(database = name, %error, "could not give a test database back");
            }
            return;
        }
        match &self.drops {
            Dropper::Task(drops) => {
                let _ = drops.send(Finished::Drop(name));
            }
            Dropper::Admin => {
                let dropped = match self.connection().await {
                    Ok(connection) => server::drop_on(connection, &name)
                        .await
                        .map_err(TestDbError::from),
                    Err(error) => Err(error),
                };
                if let Err(error) = dropped {
                    if lost_connection(&error) {
                        self.connection = None;
                    }
                    warn!(database = name, %error, "could not drop a test database");
                }
            }
        }
    }

    /// A clone of `key`'s template. A lost admin connection is forgotten, so the next request
    /// connects again instead of failing on it for the rest of the process.
    async fn clone_for(&mut self, key: &str) -> Result<String, TestDbError> {
        let cloned = self.clone_on_admin(key).await;
        if let Err(error) = &cloned
            && lost_connection(error)
        {
            self.connection = None;
        }
        cloned
    }

    async fn clone_on_admin(&mut self, key: &str) -> Result<String, TestDbError> {
        let (spec, template) = match self.by_template.get(key) {
            Some((spec, stock)) => (spec.clone(), stock.template.clone()),
            None => return Err(TestDbError::UnknownMigrationSet),
        };
        let admin = self.admin.clone();
        self.connection().await?;
        let server_version = self.server_version.clone().unwrap_or_default();
        let connection = self.connection().await?;
        let template = if let Some(template) = template {
            template
        } else {
            let base = template_name(&spec.migrations.fingerprint(), &server_version);
            ensure_template(
                connection,
                &admin,
                &Recipe::Migrated(&spec.migrations),
                &base,
            )
            .await?;
            server::mark_template_used(connection, &base).await?;
            if spec.baked.is_empty() {
                base
            } else {
                let baked = template_name(key, &server_version);
                let recipe = Recipe::Baked {
                    base: &base,
                    fixtures: &spec.baked,
                };
                ensure_template(connection, &admin, &recipe, &baked).await?;
                server::mark_template_used(connection, &baked).await?;
                baked
            }
        };
        let name = clone_database(connection, &template).await;
        if let Some((_, stock)) = self.by_template.get_mut(key) {
            stock.template = Some(template);
        }
        name
    }

    /// One step of work nobody waits for: the server's upkeep once, else a prefetched clone.
    /// `false` when idle.
    async fn background_step(&mut self) -> bool {
        if !self.tidied {
            self.tidied = true;
            match self.connection().await {
                Ok(connection) => {
                    if let Err(error) = server::tidy(connection).await {
                        warn!(%error, "could not tidy the shared test server");
                    }
                }
                Err(error) => warn!(%error, "could not tidy the shared test server"),
            }
            return true;
        }
        let short = self
            .by_template
            .iter()
            .find(|(_, (_, stock))| stock.ready.len() < self.prefetch)
            .map(|(key, _)| key.clone());
        if let Some(key) = short {
            match self.clone_for(&key).await {
                Ok(name) => {
                    if let Some((_, stock)) = self.by_template.get_mut(&key) {
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
        false
    }
}

/// An error after which the admin connection is not used again.
fn lost_connection(error: &TestDbError) -> bool {
    matches!(error, TestDbError::Database(error) if crate::database::is_connection_lost(error))
}

/// Drops finished test databases, on its own connection so that a drop never waits for a clone
/// nor a clone for a drop: the server works on both at once.
async fn drop_finished(admin: DatabaseUrl, mut work: mpsc::UnboundedReceiver<Finished>) {
    let mut connection: Option<PgConnection> = None;
    while let Some(finished) = work.recv().await {
        let name = match finished {
            Finished::Drop(name) => name,
            Finished::Flush(reply) => {
                let _ = reply.send(());
                continue;
            }
        };
        if connection.is_none() {
            match PgConnection::connect_with(&admin.connect_options()).await {
                Ok(connected) => connection = Some(connected),
                Err(error) => {
                    warn!(%error, database = name, "could not drop a test database");
                    continue;
                }
            }
        }
        if let Some(connection) = connection.as_mut()
            && let Err(error) = server::drop_on(connection, &name).await
        {
            warn!(database = name, %error, "could not drop a test database");
        }
    }
}

async fn serve_requests(
    admin: DatabaseUrl,
    connection: Option<PgConnection>,
    pool: Option<PoolClient>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
) {
    let admin_for_drops = admin.clone();
    let mut state = Stocks {
        admin,
        connection,
        server_version: None,
        by_template: HashMap::new(),
        drops: if TestSettings::get().process_per_test {
            Dropper::Admin
        } else {
            let (drops, names) = mpsc::unbounded_channel();
            tokio::spawn(drop_finished(admin_for_drops, names));
            Dropper::Task(drops)
        },
        prefetch: TestSettings::get().prefetch,
        // The pool's process keeps its own databases; this one makes none.
        tidied: pool.is_some(),
        pool: pool.map(|pool| (pool, HashMap::new())),
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

/// Runs when the process exits (after `main`, with the background thread still running): waits
/// until the databases of the process's finished tests and its unused ready clones are dropped,
/// so none outlives the process (under nextest each test is a process). A test's `Drop` only queues its database: dropping it
/// there would block the test's thread, and with it any connection that thread is still opening,
/// which `DROP DATABASE` waits for (its barrier) until `authentication_timeout`.
#[dtor::dtor(unsafe)]
fn drop_this_process_databases() {
    let Some(worker) = WORKER.get() else {
        return;
    };
    let (done, wait) = std::sync::mpsc::sync_channel(1);
    if worker.requests.send(Request::Flush(done)).is_ok()
        && wait.recv_timeout(FINAL_DROPS_TIMEOUT).is_err()
    {
        warn!("the test databases of this process were not all dropped before it ended");
    }
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

async fn clone_database(
    connection: &mut PgConnection,
    template: &str,
) -> Result<String, TestDbError> {
    let name = format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
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
