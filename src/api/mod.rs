//! The HTTP API (axum): health, users, connection and database control, metrics, `OpenAPI`.
//!
//! [`router`] builds the whole app for one [`ApiContext`], so tests call it with
//! `tower::ServiceExt::oneshot`; [`Application`] binds it to a socket and serves it until a
//! shutdown signal, finishing in-flight requests.

mod access;
mod admin;
mod dev_data;
mod docs;
mod error;
mod health;
mod metrics;
mod monitor;
mod openapi;
mod overview;
mod serve;
mod snapshots;
mod statements;
mod ui;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, header};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;
use tracing::{Span, info, info_span};

pub use self::access::{AccessPolicy, AdminGranted, admin_token, load_or_create_admin_token};
pub use self::error::{ApiError, ApiJson, FieldError};
pub use self::openapi::openapi;
pub use self::serve::{Application, BindError, HEADER_READ_TIMEOUT};
pub use self::users::{BATCH_LIMIT, EMAIL_PATTERN, NewUser, USERNAME_PATTERN, User};
use crate::config::{DatabaseUrl, Environment};
use crate::database::Database;
use crate::dev_data::DevData;
use crate::embedded::EmbeddedServer;
use crate::migrations::Migrations;
use crate::monitor::Monitor;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// A request body must arrive within this, or the request is answered 408. Bodies are read
/// before a database connection is taken, so a slow client holds no connection meanwhile.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a handler may need. One shared allocation: axum clones the state into every
/// request and every `from_fn_with_state` layer, so a clone is one reference count, not one
/// per field (measured: the per-field clones and drops were ~3 % of the API's CPU per GET).
#[derive(Debug, Clone)]
pub struct ApiContext(Arc<Context>);

/// The fields of an [`ApiContext`], reached through it.
#[derive(Debug)]
pub struct Context {
    /// The application's pool.
    pub database: Database,
    /// `APP_ENV`, shown by `/health`.
    pub environment: Environment,
    /// The application database, for the connection screen (shown masked).
    pub url: DatabaseUrl,
    /// The embedded server, absent against an external one.
    pub server: Option<Arc<EmbeddedServer>>,
    /// The migrations `/api/database` reports on.
    pub migrations: Arc<Migrations>,
    /// Who may use which routes.
    pub access: AccessPolicy,
    /// Resetting and seeding the database from the UI, where allowed.
    pub dev_data: DevData,
    /// Health over time and the events timeline.
    pub monitor: Arc<Monitor>,
    metrics: metrics::Metrics,
}

impl std::ops::Deref for ApiContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.0
    }
}

impl ApiContext {
    /// The context of an API on `database`, with the embedded `server` it may control (`None`
    /// for an external server), under the `access` policy.
    #[must_use]
    pub(crate) fn new(
        database: Database,
        environment: Environment,
        url: DatabaseUrl,
        server: Option<Arc<EmbeddedServer>>,
        migrations: Arc<Migrations>,
        dev_data: DevData,
        access: AccessPolicy,
    ) -> Self {
        Self(Arc::new(Context {
            metrics: metrics::Metrics::new(database.clone()),
            database,
            environment,
            url,
            server,
            migrations,
            access,
            dev_data,
            monitor: Arc::new(Monitor::default()),
        }))
    }
}

/// The whole API for one context.
///
/// The layers every request passes wrap the router once, as one service: `Router::layer` wraps
/// each route separately, and axum then cloned a chain of boxed services per request (measured:
/// 77 allocations for `GET /health/live` through the router, 44 this way).
pub fn router(context: ApiContext) -> Router {
    let routes = Router::new()
        .merge(health::router())
        .merge(users::router())
        .merge(admin::router())
        .merge(monitor::router())
        .merge(statements::router())
        .merge(overview::router())
        .merge(dev_data::router())
        .merge(snapshots::router())
        .merge(docs::router())
        .merge(ui::router())
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(async || axum::Json(openapi())))
        // Per route: it needs the matched route pattern.
        .route_layer(axum::middleware::from_fn_with_state(
            context.clone(),
            metrics::track,
        ))
        .with_state(context.clone());
    let every_request = ServiceBuilder::new()
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    // `route` is recorded by `metrics::track` once the router has matched one.
                    info_span!(
                        "request",
                        method = %request.method(),
                        route = tracing::field::Empty,
                        status = tracing::field::Empty,
                    )
                })
                .on_response(
                    |response: &axum::response::Response, latency: Duration, span: &Span| {
                        span.record("status", response.status().as_u16());
                        info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "request"
                        );
                    },
                ),
        )
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(axum::middleware::map_response(
            error::detail_for_empty_errors,
        ))
        .layer(axum::middleware::from_fn_with_state(context, access::guard))
        .service(routes);
    Router::new().fallback_service(every_request)
}
