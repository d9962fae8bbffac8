//! One `Harness` runs the whole stack: binaries, embedded server (or an external one), pool.

use sqlx::PgPool;
use tracing::info;

use crate::binaries::{self, BinariesError, BinarySources, ProgressSink};
use crate::config::{Config, DatabaseTarget, DatabaseUrl};
use crate::database;
use crate::embedded::{EmbeddedServer, ServerError, ServerOptions};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// The running stack. Stop it with [`Harness::shutdown`]; dropping it also stops an owned
/// embedded server.
#[derive(Debug)]
pub struct Harness {
    config: Config,
    server: Option<EmbeddedServer>,
    url: DatabaseUrl,
    pool: PgPool,
}

impl Harness {
    /// Starts (or attaches to) the embedded server when no `DATABASE_URL` is set, and builds
    /// the pool. The pool connects on first use.
    ///
    /// # Errors
    ///
    /// [`HarnessError`] when binaries cannot be had or the server cannot start.
    pub async fn start(config: Config, progress: &ProgressSink) -> Result<Self, HarnessError> {
        let (server, url) = match &config.database {
            DatabaseTarget::External(url) => {
                info!(database = %url, "using the PostgreSQL server named by DATABASE_URL");
                (None, url.clone())
            }
            DatabaseTarget::Embedded(settings) => {
                let sources = BinarySources {
                    bin_dir: settings.bin_dir.clone(),
                    cache_dir: settings.cache_dir.clone(),
                    offline: false,
                };
                let binaries = binaries::provision(&sources, progress).await?;
                let options = ServerOptions {
                    home: settings.data_dir.clone(),
                    port: settings.port,
                    database: settings.database.clone(),
                    durable: true,
                    configuration: Default::default(),
                };
                let server = EmbeddedServer::start(&binaries, &options).await?;
                let url = server.url();
                (Some(server), url)
            }
        };
        let pool = database::lazy_pool(&url, &config.pool);
        Ok(Self {
            config,
            server,
            url,
            pool,
        })
    }

    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The application database's URL (its password is masked when displayed).
    #[must_use]
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The embedded server, when there is one.
    #[must_use]
    pub fn server(&self) -> Option<&EmbeddedServer> {
        self.server.as_ref()
    }

    /// Closes the pool, then stops the embedded server if this process owns it.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Server`] when the server does not stop cleanly.
    pub async fn shutdown(self) -> Result<(), HarnessError> {
        self.pool.close().await;
        if let Some(server) = self.server {
            server.stop().await?;
        }
        Ok(())
    }
}
