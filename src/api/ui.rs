//! The web UI (`ui/`): one page and its script and style, built into the binary, so
//! `cargo run` needs no Node.js and the UI works offline.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::ApiContext;

/// Revalidate every time: the files change with the binary, and they are small.
const NO_CACHE: &str = "no-cache";
/// Only this origin's scripts, styles and API; nothing from elsewhere.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route(
            "/",
            get(async || {
                (
                    [(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)],
                    asset(
                        "text/html; charset=utf-8",
                        NO_CACHE,
                        include_bytes!("../../ui/index.html"),
                    ),
                )
            }),
        )
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
