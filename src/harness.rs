//! One `Harness` runs the whole stack: binaries, embedded server (or an external one), pool,
//! migrations.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tracing::{debug, info, warn};

use crate::api::ApiContext;
use crate::binaries::{self, BinariesError};
use crate::config::{Config, DatabaseTarget, DatabaseUrl};
use crate::database::{Database, DatabaseError};
use crate::embedded::{EmbeddedServer, ServerError, ServerOptions};
use crate::migrations::drift::{self, Difference};
use crate::migrations::{MigrationEntry, MigrationError, Migrations};
use crate::progress::{self, ProgressSink};

/// Why the harness cannot start or stop.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No `PostgreSQL` binaries.
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    /// The embedded server failed.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A migration failed.
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// The database cannot be reached.
    #[error(transparent)]
    Database(#[from] DatabaseError),
    /// The admin token file cannot be read or written.
    #[error(
        "cannot read or create the admin token {}: {source}. Make PGHARNESS_DATA_DIR ({}) \
         writable by this user, or set PGHARNESS_ADMIN_TOKEN",
        path.display(), path.parent().unwrap_or(path).display()
    )]
    AdminToken {
        /// The token file.
        path: std::path::PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

impl HarnessError {
    /// The database went away under the call: its server stopping, restarting or being taken
    /// over.
    fn lost_the_database(&self) -> bool {
        use sqlx::migrate::MigrateError;
        match self {
            Self::Database(DatabaseError::Connection(_)) => true,
            Self::Database(DatabaseError::Query(error))
            | Self::Migration(
                MigrationError::Database(error)
                | MigrationError::Migrate(
                    MigrateError::Execute(error) | MigrateError::ExecuteMigration(error, _),
                ),
            ) => crate::database::is_connection_lost(error),
            _ => false,
        }
    }
}

/// The running stack. Stop it with [`Harness::shutdown`]; dropping it also stops an owned
/// embedded server.
#[derive(Debug)]
pub struct Harness {
    config: Config,
    server: Option<Arc<EmbeddedServer>>,
    url: DatabaseUrl,
    database: Database,
    migrations: Arc<Migrations>,
    /// Opens the admin routes: `PGHARNESS_ADMIN_TOKEN`, else the one kept in the data
    /// directory (or, on a database something else runs, one made for this process).
    admin_token: SecretString,
}

impl Harness {
    /// Starts (or attaches to) the embedded server when no `DATABASE_URL` is set, and builds
    /// the pool. The pool connects on first use; no migration runs yet.
    ///
    /// # Errors
    ///
    /// [`HarnessError`] when binaries cannot be had, the server cannot start, or the
    /// migrations directory cannot be read.
    pub async fn start(config: Config, progress: &ProgressSink) -> Result<Self, HarnessError> {
        let migrations = Migrations::configured(config.migrations.dir.as_deref()).await?;
        let (server, url) = match &config.database {
            DatabaseTarget::External(url) => {
                info!(database = %url, "using the PostgreSQL server named by DATABASE_URL");
                (None, url.clone())
            }
            DatabaseTarget::Embedded => {
                let settings = &config.embedded;
                crate::embedded::adopt_data_dir_from_roots_home(&settings.data_dir)?;
                let binaries = binaries::provision(&settings.into(), progress).await?;
                let options = ServerOptions::configured(settings);
                let server = Arc::new(EmbeddedServer::start(&binaries, &options).await?);
                server.supervise();
                let url = server.url();
                (Some(server), url)
            }
        };
        let admin_token = crate::api::admin_token(&config.api, Some(&config.embedded.data_dir))
            .map_err(|source| HarnessError::AdminToken {
                path: config.embedded.data_dir.join("admin-token"),
                source,
            })?;
        Ok(Self::assemble(config, server, url, migrations, admin_token))
    }

    /// A harness on a database that something else runs (a test database, a server started
    /// elsewhere): no embedded server, whatever `config.database` says. The pool connects on
    /// first use.
    ///
    /// # Errors
    ///
    /// When the operating system gives no random bytes for the admin token.
    pub fn on_database(
        config: Config,
        url: DatabaseUrl,
        migrations: Migrations,
    ) -> std::io::Result<Self> {
        let admin_token = crate::api::admin_token(&config.api, None)?;
        Ok(Self::assemble(config, None, url, migrations, admin_token))
    }

    fn assemble(
        config: Config,
        server: Option<Arc<EmbeddedServer>>,
        url: DatabaseUrl,
        migrations: Migrations,
        admin_token: SecretString,
    ) -> Self {
        let database = Database::connect_lazy(&url, &config.pool);
        Self {
            config,
            server,
            url,
            database,
            migrations: Arc::new(migrations),
            admin_token,
        }
    }

    /// The token that opens the admin routes (for the UI's link and the desktop window).
    #[must_use]
    pub fn admin_token(&self) -> &SecretString {
        &self.admin_token
    }

    /// The configuration it runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The application's pool.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The migrations it applies.
    #[must_use]
    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }

    /// The application database's URL (its password is masked when displayed).
    #[must_use]
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// What the HTTP API needs of this stack.
    #[must_use]
    pub fn api_context(&self) -> ApiContext {
        ApiContext::new(
            self.database.clone(),
            self.config.environment,
            self.url.clone(),
            self.server.clone(),
            Arc::clone(&self.migrations),
            self.dev_data(),
            crate::api::AccessPolicy::new(&self.config.api, &self.admin_token),
        )
    }

    /// What may be done to the dev database here: reset, fixtures, snapshots (an external
    /// server counts as shared).
    #[must_use]
    pub fn dev_data(&self) -> crate::dev_data::DevData {
        crate::dev_data::DevData::new(
            self.config.dev_data.clone(),
            self.config.environment,
            self.server.is_none().then(|| self.url.masked()),
        )
    }

    /// The embedded server, when there is one.
    #[must_use]
    pub fn server(&self) -> Option<&Arc<EmbeddedServer>> {
        self.server.as_ref()
    }

    /// What `serve` does before it reports ready: connect, warn when the pool could exceed the
    /// server's connection limit, and apply pending migrations unless `PGHARNESS_AUTO_MIGRATE`
    /// is off.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Database`] when the database cannot be reached;
    /// [`HarnessError::Migration`] when a migration fails or conflicts.
    pub async fn prepare(&self) -> Result<Vec<MigrationEntry>, HarnessError> {
        // A start that raced its owner's shutdown may have attached to a server about to stop:
        // the supervisor takes it over (or starts it again) within seconds; wait for that.
        let deadline = std::time::Instant::now() + Duration::from_mins(1);
        loop {
            match self.prepare_once().await {
                Err(error)
                    if self.server.is_some()
                        && error.lost_the_database()
                        && std::time::Instant::now() < deadline =>
                {
                    debug!(%error, "the embedded server went away while preparing; waiting for it");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                prepared => return prepared,
            }
        }
    }

    async fn prepare_once(&self) -> Result<Vec<MigrationEntry>, HarnessError> {
        if let Some(warning) = self.database.sizing_warning().await? {
            warn!("{warning}");
        }
        if !self.config.migrations.apply_on_start {
            return Ok(Vec::new());
        }
        Ok(self
            .migrations
            .up(self.database.maintenance_pool(), None)
            .await?)
    }

    /// Compares the live schema with what the migrations produce, on a throwaway database
    /// of the embedded server (one is started for the purpose when the live database is
    /// external).
    ///
    /// # Errors
    ///
    /// [`HarnessError`] when no scratch server can be had or the comparison fails.
    pub async fn drift(&self) -> Result<Vec<Difference>, HarnessError> {
        if let Some(server) = &self.server {
            let scratch = server.superuser_url("postgres");
            return Ok(
                drift::check(&self.migrations, self.database.maintenance_pool(), &scratch).await?,
            );
        }
        let binaries =
            binaries::provision(&(&self.config.embedded).into(), &progress::quiet()).await?;
        let home = crate::platform::files::scratch_dir().map_err(|source| ServerError::Io {
            action: "cannot create a temporary directory in",
            path: std::env::temp_dir(),
            source,
        })?;
        let scratch_server = EmbeddedServer::start(
            &binaries,
            &ServerOptions::throwaway(home.path(), "postgres"),
        )
        .await?;
        let result = drift::check(
            &self.migrations,
            self.database.maintenance_pool(),
            &scratch_server.superuser_url("postgres"),
        )
        .await;
        scratch_server.stop().await?;
        Ok(result?)
    }

    /// Closes the pool, then stops the embedded server if this process owns it.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Server`] when the server does not stop cleanly.
    pub async fn shutdown(self) -> Result<(), HarnessError> {
        self.database.close().await;
        if let Some(server) = self.server {
            server.stop().await?;
        }
        Ok(())
    }
}

/// The whole stack running: harness, migrations applied, API served in the background. What
/// the desktop app runs; `serve` does the same in the foreground.
#[derive(Debug)]
pub struct Stack {
    harness: Harness,
    applied: Vec<MigrationEntry>,
    exposure: Option<String>,
    admin_link: Option<String>,
    address: std::net::SocketAddr,
    stop_api: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Why the stack cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The harness failed.
    #[error(transparent)]
    Harness(#[from] HarnessError),
    /// The API cannot listen.
    #[error(transparent)]
    Bind(#[from] crate::api::BindError),
    /// The bound address cannot be read.
    #[error("cannot tell the API's address: {0}")]
    Address(std::io::Error),
}

impl Stack {
    /// Starts everything, reporting each step to `progress`.
    ///
    /// # Errors
    ///
    /// [`StackError`] naming the step that failed and why.
    pub async fn start(config: Config, progress: &ProgressSink) -> Result<Self, StackError> {
        progress(crate::progress::Progress::Step(
            "Locating PostgreSQL 16 binaries and starting the server".to_owned(),
        ));
        let (host, port) = (config.api.host.clone(), config.api.port);
        let harness = Harness::start(config, progress).await?;
        progress(crate::progress::Progress::Step(
            "Applying migrations".to_owned(),
        ));
        let applied = harness.prepare().await?;
        progress(crate::progress::Progress::Step(
            "Starting the API".to_owned(),
        ));
        let context = harness.api_context();
        context
            .monitor
            .start_sampling(harness.database.clone(), harness.server.as_ref());
        context.monitor.record(
            crate::monitor::EventKind::Started,
            format!(
                "API started on the {} database {}",
                if harness.server.is_some() {
                    "embedded"
                } else {
                    "external"
                },
                harness.url.masked()
            ),
        );
        if !applied.is_empty() {
            context.monitor.record(
                crate::monitor::EventKind::MigrationsApplied,
                format!(
                    "{} migration(s) applied: {}",
                    applied.len(),
                    applied
                        .iter()
                        .map(|entry| format!("{} {}", entry.version, entry.description))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
        let exposure = context.access.exposure();
        let admin_by_token = context.access.admin_by_token();
        let application = crate::api::Application::bind(context, &host, port).await?;
        let address = application.local_addr().map_err(StackError::Address)?;
        let admin_link = admin_by_token.then(|| {
            format!(
                "http://{address}/?token={}",
                harness.admin_token.expose_secret()
            )
        });
        let (stop_api, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(application.run_until(async move {
            let _ = stopped.await;
        }));
        progress(crate::progress::Progress::Done);
        Ok(Self {
            harness,
            applied,
            exposure,
            admin_link,
            address,
            stop_api,
            serving,
        })
    }

    /// The migrations applied as it started.
    #[must_use]
    pub fn applied_migrations(&self) -> &[MigrationEntry] {
        &self.applied
    }

    /// What the API exposes beyond this machine, when it listens on more than loopback.
    #[must_use]
    pub fn exposure(&self) -> Option<&str> {
        self.exposure.as_deref()
    }

    /// Serves until `shutdown` resolves (or the API stops by itself), then shuts down as
    /// [`Stack::shutdown`] does: the CLI's foreground run.
    ///
    /// # Errors
    ///
    /// [`HarnessError`] when the server does not stop cleanly.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), HarnessError> {
        tokio::select! {
            () = shutdown => self.shutdown().await,
            served = &mut self.serving => {
                match served {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => warn!(%error, "the API stopped with an error"),
                    Err(error) => warn!(%error, "the API task failed"),
                }
                self.harness.shutdown().await
            }
        }
    }

    /// The harness under the API.
    #[must_use]
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// The UI's link with the admin token (`/?token=…`), which opens the admin routes in the
    /// browser that follows it; `None` when they are closed (beyond loopback without
    /// `PGHARNESS_ADMIN_TOKEN`).
    #[must_use]
    pub fn admin_link(&self) -> Option<&str> {
        self.admin_link.as_deref()
    }

    /// The API's (and UI's) base URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// In order: the API (finishing in-flight requests), the pool, `PostgreSQL`.
    ///
    /// # Errors
    ///
    /// [`HarnessError`] when the server does not stop cleanly.
    pub async fn shutdown(self) -> Result<(), HarnessError> {
        let _ = self.stop_api.send(());
        if let Ok(Err(error)) = self.serving.await {
            warn!(%error, "the API stopped with an error");
        }
        self.harness.shutdown().await
    }
}
