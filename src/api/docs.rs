//! `GET /docs`: Swagger UI (as `FastAPI` serves at `/docs`) over `/openapi.json`, from assets
//! built into the binary, so the docs work offline.

use axum::Router;
use axum::http::header;
use axum::response::Html;
use axum::routing::get;

use super::ApiContext;
use super::ui::{CONTENT_SECURITY_POLICY, asset};

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>pgharness API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"#;

/// A separate file, not inline, so a strict content security policy can forbid inline scripts.
const INIT: &str =
    "window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui' });\n";

const CACHE_A_DAY: &str = "public, max-age=86400";

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route(
            "/docs",
            get(async || {
                // Swagger UI's "Execute" buttons change data: no other site may frame them.
                (
                    [(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY)],
                    Html(PAGE),
                )
            }),
        )
        .route(
            "/docs/init.js",
            get(async || {
                asset(
                    "text/javascript; charset=utf-8",
                    CACHE_A_DAY,
                    INIT.as_bytes(),
                )
            }),
        )
        .route(
            "/docs/swagger-ui-bundle.js",
            get(async || {
                asset(
                    "text/javascript; charset=utf-8",
                    CACHE_A_DAY,
                    include_bytes!("../../ui/vendor/swagger-ui/swagger-ui-bundle.js"),
                )
            }),
        )
        .route(
            "/docs/swagger-ui.css",
            get(async || {
                asset(
                    "text/css; charset=utf-8",
                    CACHE_A_DAY,
                    include_bytes!("../../ui/vendor/swagger-ui/swagger-ui.css"),
                )
            }),
        )
}
