//! The web UI (`ui/`): one page and its script and style, built into the binary, so
//! `cargo run` needs no Node.js and the UI works offline.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::ApiContext;

/// Revalidate every time: the files change with the binary, and they are small.
const NO_CACHE: &str = "no-cache";
/// Only this origin's scripts, styles and API; nothing from elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(async || {
                asset(
                    "text/javascript; charset=utf-8",
                    NO_CACHE,
                    include_bytes!("../../ui/app.js"),
                )
            }),
        )
        .route(
            "/app.css",
            get(async || {
                asset(
                    "text/css; charset=utf-8",
                    NO_CACHE,
                    include_bytes!("../../ui/app.css"),
                )
            }),
        )
}

/// `?token=…`: the link `pgharness serve` prints, traded for the admin cookie.
#[derive(serde::Deserialize)]
struct Link {
    token: Option<String>,
}

/// The page; with the link's token, a redirect to it that sets the admin cookie, so the token
/// leaves the address bar (and the history) at once.
async fn index(
    State(context): State<ApiContext>,
    Query(link): Query<Link>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = link.token {
        return context.access.exchange_link_token(&headers, &token);
    }
    (
        [(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)],
        asset(
            "text/html; charset=utf-8",
            NO_CACHE,
            include_bytes!("../../ui/index.html"),
        ),
    )
        .into_response()
}

/// A file built into the binary, with its content type and caching policy.
pub(super) fn asset(
    content_type: &'static str,
    cache_control: &'static str,
    bytes: &'static [u8],
) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache_control),
        ],
        bytes,
    )
}
