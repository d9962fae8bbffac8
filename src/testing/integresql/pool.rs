//! What `pgharness testdb serve` keeps track of, and its templates' lifecycle (initialize,
//! finalize, discard): per template hash, its template database (and who initializes it), its
//! test databases (ready, handed out, being made), and the limit across templates. Database names are short digests, so any hash fits `PostgreSQL`'s 63 bytes; every
//! database has a login role of its own that owns it, so a handed-out role reaches no other.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Notify;

use crate::config::DatabaseUrl;
use crate::platform::{process, random};

/// Databases of `testdb serve` are named `<prefix><pid>_…`.
pub const SERVED_PREFIX: &str = "pgh_i_";

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
            finalize_wait: Duration::from_mins(1),
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

pub(super) fn refuse(status: u16, detail: impl Into<String>) -> Refusal {
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

/// Connection settings of one database, as `IntegreSQL`'s clients read them.
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
pub(super) enum Status {
    Initializing(Initializing),
    Finalized,
    Discarded(String),
}

#[derive(Debug)]
pub(super) struct Initializing {
    pub(super) since: Instant,
    /// A finalize arrived (maybe from a caller that got 423, before the initializer is done).
    pub(super) finalize_requested: Option<Instant>,
    /// The initializer has connected to the template at least once.
    pub(super) connected: bool,
    /// When a session on the template was last seen.
    pub(super) last_seen: Instant,
    /// Being finalized now (by a finalize request or the watch, never both).
    pub(super) finalizing: bool,
}

#[derive(Debug)]
pub(super) struct Template {
    /// The template database's name, and its initializer's role.
    pub(super) name: String,
    pub(super) status: Status,
    pub(super) next_id: u32,
    pub(super) ready: VecDeque<u32>,
    pub(super) handed: BTreeMap<u32, Instant>,
    pub(super) creating: usize,
    pub(super) passwords: HashMap<u32, String>,
}

impl Template {
    pub(super) fn database(&self, id: u32) -> String {
        format!("{}_{id}", self.name)
    }

    pub(super) fn count(&self) -> usize {
        self.ready.len() + self.handed.len() + self.creating
    }
}

/// The served templates and their test databases, on the shared test server.
pub struct Service {
    pub(super) admin: DatabaseUrl,
    pub(super) pool: PgPool,
    pub(super) prefix: String,
    pub(super) settings: PoolSettings,
    templates: Mutex<HashMap<String, Template>>,
    generation: std::sync::atomic::AtomicU64,
    /// A template changed state (waiters look again).
    pub(super) changed: Notify,
    /// A test database was taken or freed (the refiller looks again).
    pub(super) refill: Notify,
    /// The refiller and the initializers' watch, stopped at shutdown.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    stopping: std::sync::atomic::AtomicBool,
    /// Requests waiting in `GET …/tests` for a template to be finalized.
    pub(super) waiting: std::sync::atomic::AtomicUsize,
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

    pub(super) fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, Template>> {
        self.templates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn config(&self, database: &str, password: &str) -> DatabaseConfig {
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
        let hex = &format!("{digest:x}")[..12];
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}{generation}_{hex}", self.prefix)
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
    pub(super) fn discard_as(&self, hash: &str, reason: String) -> Result<Vec<String>, Refusal> {
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
}

pub(super) fn unknown(hash: &str) -> Refusal {
    refuse(
        404,
        format!("template {hash} not found: initialize it first with POST /api/v1/templates"),
    )
}

pub(super) fn gone(hash: &str, reason: &str) -> Refusal {
    refuse(410, format!("template {hash} was discarded ({reason})"))
}
