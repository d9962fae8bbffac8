//! The HTTP API (axum): health, users, connection and database control, metrics, OpenAPI.
//!
//! [`router`] builds the whole app for one [`ApiContext`], so tests call it with
//! `tower::ServiceExt::oneshot`; [`Application`] binds it to a socket and serves it until a
//! shutdown signal, finishing in-flight requests.

mod admin;
mod docs;
mod error;
mod health;
mod metrics;
mod ui;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use tracing::{Span, info, info_span};
use utoipa::OpenApi as _;

pub use self::error::{ApiError, ApiJson, FieldError};
pub use self::users::{BATCH_LIMIT, NewUser, User};
use crate::config::{DatabaseUrl, Environment};
use crate::database::Database;
use crate::embedded::EmbeddedServer;
use crate::migrations::Migrations;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Everything a handler may need; cheap to clone.
#[derive(Debug, Clone)]
pub struct ApiContext {
    pub database: Database,
    pub environment: Environment,
    /// The application database, for the connection screen (shown masked).
    pub url: DatabaseUrl,
    /// The embedded server, absent against an external one.
    pub server: Option<Arc<EmbeddedServer>>,
    pub migrations: Arc<Migrations>,
    metrics: Arc<metrics::Metrics>,
}

impl ApiContext {
    #[must_use]
    pub fn new(
        database: Database,
        environment: Environment,
        url: DatabaseUrl,
        server: Option<Arc<EmbeddedServer>>,
        migrations: Arc<Migrations>,
    ) -> Self {
        Self {
            metrics: Arc::new(metrics::Metrics::new(database.clone())),
            database,
            environment,
            url,
            server,
            migrations,
        }
    }
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "pgharness", description = "The database stack of a web service: health, users, connection and database control."),
    paths(
        health::health, health::live, health::ready,
        users::list_users, users::get_user, users::create_user, users::create_batch,
        users::update_user, users::delete_user,
        admin::connection, admin::slow_queries, admin::stop_database, admin::start_database,
        admin::restart_database, admin::reveal_connection_string,
        metrics::metrics,
    ),
    components(schemas(FieldError)),
    tags(
        (name = "health", description = "Liveness, readiness and the guide's health report"),
        (name = "users", description = "The users table"),
        (name = "database", description = "Connection details and embedded-server control"),
        (name = "monitoring", description = "Prometheus metrics"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3 document of every route, generated from the handlers.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The whole API for one context.
pub fn router(context: ApiContext) -> Router {
    Router::new()
        .merge(health::router())
        .merge(users::router())
        .merge(admin::router())
        .merge(docs::router())
        .merge(ui::router())
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(async || axum::Json(openapi())))
        .route_layer(axum::middleware::from_fn_with_state(
            context.clone(),
            metrics::track,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(request.uri().path(), MatchedPath::as_str);
                    info_span!("request", method = %request.method(), route, status = tracing::field::Empty)
                })
                .on_response(|response: &axum::response::Response, latency: Duration, span: &Span| {
                    span.record("status", response.status().as_u16());
                    info!(status = response.status().as_u16(), latency_ms = latency.as_secs_f64() * 1000.0, "request");
                }),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(context)
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "cannot listen on {address}: the port is already in use. Stop the program using it, or \
         choose another with APP_PORT / --port (0 picks a free port)"
    )]
    InUse { address: String },
    #[error("cannot listen on {address}: {source}. Check APP_HOST / --host")]
    Other {
        address: String,
        source: std::io::Error,
    },
}

/// The API bound to its socket.
#[derive(Debug)]
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Application {
    /// Binds `host:port` (port 0: any free port; see [`Application::local_addr`]).
    ///
    /// # Errors
    ///
    /// [`BindError`] naming the address, and the fix for a port in use.
    pub async fn bind(context: ApiContext, host: &str, port: u16) -> Result<Self, BindError> {
        let address = format!("{host}:{port}");
        let listener =
            tokio::net::TcpListener::bind(&address)
                .await
                .map_err(|source| match source.kind() {
                    std::io::ErrorKind::AddrInUse => BindError::InUse {
                        address: address.clone(),
                    },
                    _ => BindError::Other {
                        address: address.clone(),
                        source,
                    },
                })?;
        Ok(Self {
            listener,
            router: router(context),
        })
    }

    /// The address actually bound.
    ///
    /// # Errors
    ///
    /// The socket's error, if it has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests.
    ///
    /// # Errors
    ///
    /// An I/O error of the listener.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
