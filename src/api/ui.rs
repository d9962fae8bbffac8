//! The web UI (`ui/`): one page, its script modules and style, built into the binary, so
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

/// Every file of the UI but the page: its path, content type and bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("/app.css", CSS, include_bytes!("../../ui/app.css")),
    ("/app.js", JS, include_bytes!("../../ui/app.js")),
    ("/js/api.js", JS, include_bytes!("../../ui/js/api.js")),
    (
        "/js/banners.js",
        JS,
        include_bytes!("../../ui/js/banners.js"),
    ),
    ("/js/batch.js", JS, include_bytes!("../../ui/js/batch.js")),
    ("/js/charts.js", JS, include_bytes!("../../ui/js/charts.js")),
    (
        "/js/connection.js",
        JS,
        include_bytes!("../../ui/js/connection.js"),
    ),
    (
        "/js/database.js",
        JS,
        include_bytes!("../../ui/js/database.js"),
    ),
    ("/js/dom.js", JS, include_bytes!("../../ui/js/dom.js")),
    ("/js/health.js", JS, include_bytes!("../../ui/js/health.js")),
    (
        "/js/helpers.js",
        JS,
        include_bytes!("../../ui/js/helpers.js"),
    ),
    (
        "/js/snapshots.js",
        JS,
        include_bytes!("../../ui/js/snapshots.js"),
    ),
    (
        "/js/user-form.js",
        JS,
        include_bytes!("../../ui/js/user-form.js"),
    ),
    ("/js/users.js", JS, include_bytes!("../../ui/js/users.js")),
];
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

pub fn router() -> Router<ApiContext> {
    FILES.iter().fold(
        Router::new().route("/", get(index)),
        |router, &(path, content_type, bytes)| {
            router.route(
                path,
                get(async move || asset(content_type, NO_CACHE, bytes)),
            )
        },
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
