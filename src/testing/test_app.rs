//! pgharness's own API on a test's own database: the `app` fixture.

use rstest::fixture;
use secrecy::{ExposeSecret as _, SecretString};

use super::{TestDb, TestDbError, db};
use crate::api::{ApiContext, Application};
use crate::config::Environment;
use crate::database::Database;
use crate::migrations::Migrations;

/// pgharness's own HTTP API on a test's own database.
#[derive(Debug)]
pub struct TestApp {
    /// The test database behind the API.
    pub db: TestDb,
    /// Its pool, as the API uses it.
    pub database: Database,
    /// The API's router, for `oneshot` requests.
    pub router: axum::Router,
    context: ApiContext,
    admin_token: SecretString,
}

impl TestApp {
    /// The API on `db` (database control routes answer 403: the shared server is not yours;
    /// the admin routes want [`TestApp::admin_token`]),
    /// assembled by [`Harness`](crate::Harness) as `pgharness serve` is, with `APP_ENV=testing`.
    ///
    /// # Errors
    ///
    /// [`TestDbError::Config`] when the testing configuration is refused (it is not, today).
    pub fn on(db: TestDb) -> Result<Self, TestDbError> {
        let config = crate::config::Config::from_lookup(|name| {
            (name == "APP_ENV").then(|| Environment::Testing.as_str().to_owned())
        })?;
        let harness = crate::Harness::on_database(config, db.url().clone(), Migrations::embedded())
            .map_err(|source| TestDbError::Io {
                action: "cannot make an admin token: no random bytes for",
                path: "the test API".into(),
                source,
            })?;
        let context = harness.api_context();
        Ok(Self {
            router: crate::api::router(context.clone()),
            database: harness.database().clone(),
            admin_token: harness.admin_token().clone(),
            context,
            db,
        })
    }

    /// The token that opens its admin routes (`Authorization: Bearer <token>`).
    #[must_use]
    pub fn admin_token(&self) -> &str {
        self.admin_token.expose_secret()
    }

    /// Serves the API on a free local port for tests that need a socket; returns its base URL.
    /// The server runs until the test's runtime ends.
    ///
    /// # Errors
    ///
    /// When no port can be bound.
    pub async fn serve(&self) -> Result<String, crate::api::BindError> {
        let application = Application::bind(self.context.clone(), "127.0.0.1", 0).await?;
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

/// pgharness's API on a fresh migrated database (rstest fixture; `app: TestApp`).
///
/// # Panics
///
/// When no database can be had.
#[fixture]
pub fn app() -> TestApp {
    match TestApp::on(db(&[])) {
        Ok(app) => app,
        Err(error) => panic!("{error}"),
    }
}
