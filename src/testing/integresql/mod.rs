//! `pgharness testdb serve`: test databases for any language, through `IntegreSQL`'s HTTP API (v1,
//! at the server's root, as its published clients call it), on the shared test server.
//!
//! A client initializes a template once per hash (`POST /api/v1/templates`: 200 with the
//! template's connection for the first caller, 423 for the others), fills it (migrations) and
//! finalizes it (`PUT …/{hash}`); every test then takes a fresh clone (`GET …/{hash}/tests`,
//! which waits until the template is finalized). Each database handed out has a login role of
//! its own that owns it and can reach no other database. A template whose initializer goes
//! away without finalizing it is discarded after `--abandon-after` seconds, so the hash is not
//! blocked for good.

mod databases;
mod handout;
mod initializers;
mod listing;
mod pool;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde_json::json;
use tokio::net::TcpListener;

pub use self::listing::{ServedTemplate, TemplateSummary, served_templates};
pub use self::pool::{DatabaseConfig, PoolSettings, Refusal, SERVED_PREFIX, Service};
use super::server::{TestServerError, TestSettings, attach};

/// Where `testdb serve` listens, and how it hands databases out.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on.
    pub host: String,
    /// Port, 0 for any free one.
    pub port: u16,
    /// The pool's settings.
    pub pool: PoolSettings,
}

/// Why `testdb serve` cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The shared test server cannot be reached.
    #[error(transparent)]
    TestServer(#[from] TestServerError),
    /// The address cannot be listened on.
    #[error(
        "cannot listen on {address}: {source}. Choose another with --host/--port (--port 0 takes a free one)"
    )]
    Listen {
        /// The address.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("serving on {address} failed: {source}")]
    Serve {
        /// The address.
        address: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A statement on the test server failed.
    #[error("the shared test server: {0}")]
    Database(#[from] sqlx::Error),
}

/// A listening `IntegreSQL` API; [`Listening::run_until`] serves it.
pub struct Listening {
    listener: TcpListener,
    service: Arc<Service>,
    address: SocketAddr,
}

impl Listening {
    /// Attaches to the shared test server (holding it while this runs) and listens.
    ///
    /// # Errors
    ///
    /// [`ServeError`] naming what failed.
    pub async fn bind(options: &ServeOptions) -> Result<Self, ServeError> {
        let address = format!("{}:{}", options.host, options.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServeError::Listen {
                address: address.clone(),
                source,
            })?;
        let address = listener
            .local_addr()
            .map_err(|source| ServeError::Listen { address, source })?;
        let attached = attach().await?;
        let service = Service::start(attached.admin, options.pool.clone()).await?;
        Ok(Self {
            listener,
            service,
            address,
        })
    }

    /// `http://host:port`: the server's root (what the Node client takes); the Python and Go
    /// clients take it with `/api`.
    #[must_use]
    pub fn url(&self) -> String {
        let ip = self.address.ip();
        let host = if ip.is_unspecified() {
            "127.0.0.1".to_owned()
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("http://{host}:{}", self.address.port())
    }

    /// Serves until `stop` resolves, then drops every database it made.
    ///
    /// # Errors
    ///
    /// [`ServeError`] when serving or the final drops fail.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let service = Arc::clone(&self.service);
        let stopping = Arc::clone(&self.service);
        let served = axum::serve(self.listener, router(Arc::clone(&self.service)))
            .with_graceful_shutdown(async move {
                stop.await;
                // Requests waiting for a template would hold the shutdown: they are answered.
                stopping.stop();
            })
            .await;
        service.shutdown().await?;
        served.map_err(|source| ServeError::Serve {
            address: self.address.to_string(),
            source,
        })
    }
}

/// The routes, at the root (`/api/v1/...`), plus an overview page at `/`.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/api/v1/templates", post(initialize))
        .route("/api/v1/templates/{hash}", put(finalize).delete(discard))
        .route("/api/v1/templates/{hash}/tests", get(take))
        .route("/api/v1/templates/{hash}/tests/{id}", delete(unlock))
        .route("/api/v1/templates/{hash}/tests/{id}/unlock", post(unlock))
        .route(
            "/api/v1/templates/{hash}/tests/{id}/recreate",
            post(recreate),
        )
        .route("/api/v1/admin/templates", delete(reset))
        .with_state(service)
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(json!({ "detail": self.detail }))).into_response()
    }
}

type Answer = Result<Response, Refusal>;

fn no_content(result: Result<(), Refusal>) -> Answer {
    result.map(|()| StatusCode::NO_CONTENT.into_response())
}

/// The hash from a JSON (`{"hash": …}`) or form-encoded (`hash=…`) body.
fn hash_from(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let hash = if form {
        url::form_urlencoded::parse(body)
            .find(|(name, _)| name == "hash")
            .map(|(_, value)| value.into_owned())
    } else {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|value| value.get("hash")?.as_str().map(str::to_owned))
    };
    let hash = hash.unwrap_or_default();
    validate(&hash)?;
    Ok(hash)
}

fn validate(hash: &str) -> Result<(), Refusal> {
    let fine = !hash.is_empty()
        && hash.len() <= 128
        && hash
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
    if fine {
        Ok(())
    } else {
        Err(Refusal {
            status: 400,
            detail: format!(
                "hash {hash:?} is not a template hash: send {{\"hash\": \"…\"}} (JSON or form) \
                 with 1 to 128 letters, digits, '-', '_' or '.' (an md5, sha1 or sha256 in hex)"
            ),
        })
    }
}

fn test_id(hash: &str, id: &str) -> Result<u32, Refusal> {
    id.parse().map_err(|_| Refusal {
        status: 400,
        detail: format!("{id:?} is not a test database id of template {hash}: ids are numbers"),
    })
}

async fn initialize(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let hash = hash_from(&headers, &body)?;
    let config = service.initialize(&hash).await?;
    Ok(
        axum::Json(json!({ "database": { "templateHash": hash, "config": config } }))
            .into_response(),
    )
}

async fn finalize(State(service): State<Arc<Service>>, Path(hash): Path<String>) -> Answer {
    no_content(service.finalize(&hash).await)
}

async fn discard(State(service): State<Arc<Service>>, Path(hash): Path<String>) -> Answer {
    no_content(service.discard(&hash).await)
}

async fn take(State(service): State<Arc<Service>>, Path(hash): Path<String>) -> Answer {
    let (id, config) = service.take(&hash).await?;
    Ok(axum::Json(json!({
        "database": { "templateHash": hash, "config": config },
        "id": id,
    }))
    .into_response())
}

async fn unlock(
    State(service): State<Arc<Service>>,
    Path((hash, id)): Path<(String, String)>,
) -> Answer {
    let id = test_id(&hash, &id)?;
    no_content(service.unlock(&hash, id).await)
}

async fn recreate(
    State(service): State<Arc<Service>>,
    Path((hash, id)): Path<(String, String)>,
) -> Answer {
    let id = test_id(&hash, &id)?;
    no_content(service.recreate(&hash, id).await)
}

async fn reset(State(service): State<Arc<Service>>) -> Answer {
    no_content(service.reset().await)
}

/// A page with the served templates, their ready and handed-out counts and the disk they use.
async fn overview(State(service): State<Arc<Service>>) -> Html<String> {
    #[expect(clippy::cast_precision_loss, reason = "megabytes to one decimal")]
    let disk = service.disk_use().await.map_or_else(
        |_| "unknown".to_owned(),
        |bytes| format!("{:.1} MB", bytes as f64 / 1e6),
    );
    let waiting = service.waiting();
    let rows = service.summary().iter().fold(String::new(), |mut rows, template| {
        let _ = write!(
            rows,
            "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&template.hash),
            template.database,
            template.state,
            template.ready,
            template.handed_out
        );
        rows
    });
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>pgharness test databases</title>\
         <meta http-equiv=\"refresh\" content=\"5\"></head><body>\
         <h1>Test databases (IntegreSQL API)</h1>\
         <p>Clients: <code>INTEGRESQL_CLIENT_BASE_URL=&lt;this address&gt;/api</code>. Disk used: {disk}. Requests waiting for a template: <span id=\"waiting\">{waiting}</span>.</p>\
         <table border=\"1\" cellpadding=\"4\"><tr><th>Hash</th><th>Template database</th><th>State</th>\
         <th>Ready</th><th>Handed out</th></tr>{rows}</table></body></html>"
    ))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The variables `testdb run` sets for its command: `IntegreSQL`'s clients for Python, Go and Java
/// read `INTEGRESQL_CLIENT_BASE_URL`; the Node client reads none and is given the server's root,
/// by convention from `INTEGRESQL_URL`; `pgharness::testing` under nextest reads
/// `PGHARNESS_TEST_POOL_URL`, and the run directory of the server the pool holds.
#[must_use]
pub fn client_environment(url: &str) -> [(&'static str, String); 4] {
    [
        ("INTEGRESQL_CLIENT_BASE_URL", format!("{url}/api")),
        ("INTEGRESQL_URL", url.to_owned()),
        ("PGHARNESS_TEST_POOL_URL", url.to_owned()),
        (
            "PGHARNESS_TEST_DIR",
            TestSettings::get().run_dir.to_string_lossy().into_owned(),
        ),
    ]
}
