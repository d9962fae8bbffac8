//! Who may use the API. A local server is still a server: any web page the developer visits can
//! send requests to 127.0.0.1, so
//! - the `Host` check refuses names that are not this server's (DNS rebinding: a page whose name
//!   now resolves to 127.0.0.1 would otherwise read every answer, the password included);
//! - the cross-site check refuses state-changing requests from another origin, and bodies a
//!   cross-site "simple request" can send without a CORS preflight (CSRF);
//! - the admin routes (connection string, database control) are open on loopback only; beyond
//!   it they need `PGHARNESS_ADMIN_TOKEN` as a bearer token, or stay closed.

use std::net::IpAddr;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, Method, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use sha2::{Digest, Sha256};

use super::ApiContext;
use super::error::ApiError;
use crate::config::ApiSettings;

/// The access rules of one API instance, from `APP_HOST`, `PGHARNESS_ALLOWED_HOSTS` and
/// `PGHARNESS_ADMIN_TOKEN`.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    /// Host names (lower case) accepted besides loopback ones.
    allowed_hosts: Vec<String>,
    /// Listening on every address (`0.0.0.0`, `::`): the machine's addresses are reached by IP,
    /// and an IP literal cannot be rebound, so any is accepted.
    any_address: bool,
    /// Where the API listens, as configured, for messages.
    bind_host: String,
    admin: AdminAccess,
}

#[derive(Debug, Clone)]
enum AdminAccess {
    /// Listening on loopback only: whoever can connect is on this machine.
    Open,
    /// Beyond loopback with a token: its SHA-256, compared instead of the token itself so that
    /// the comparison's time says nothing about the token.
    Token([u8; 32]),
    /// Beyond loopback without a token.
    Closed,
}

impl Default for AccessPolicy {
    /// Listening on 127.0.0.1 with no extra names.
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            any_address: false,
            bind_host: "127.0.0.1".to_owned(),
            admin: AdminAccess::Open,
        }
    }
}

impl AccessPolicy {
    /// The policy for an API listening on `settings.host`.
    #[must_use]
    pub fn new(settings: &ApiSettings) -> Self {
        let host = normalise(strip_brackets(&settings.host));
        let address = host.parse::<IpAddr>().ok();
        let loopback = is_loopback_name(&host) || address.is_some_and(|ip| ip.is_loopback());
        let mut allowed_hosts = settings
            .allowed_hosts
            .iter()
            .map(|name| normalise(name))
            .collect::<Vec<_>>();
        if address.is_none_or(|ip| !ip.is_unspecified()) {
            allowed_hosts.push(host);
        }
        let admin = match (&settings.admin_token, loopback) {
            (_, true) => AdminAccess::Open,
            (Some(token), false) => AdminAccess::Token(digest(token.expose_secret())),
            (None, false) => AdminAccess::Closed,
        };
        Self {
            allowed_hosts,
            any_address: address.is_some_and(|ip| ip.is_unspecified()),
            bind_host: settings.host.clone(),
            admin,
        }
    }

    /// What is reachable from other machines, for the start-up message; `None` on loopback.
    #[must_use]
    pub fn exposure(&self) -> Option<String> {
        match self.admin {
            AdminAccess::Open => None,
            AdminAccess::Token(_) => Some(format!(
                "the API listens on {} beyond this machine: health, users and docs are open to \
                 the network; the admin routes (connection string, database stop/start/restart) \
                 need `Authorization: Bearer $PGHARNESS_ADMIN_TOKEN`",
                self.bind_host
            )),
            AdminAccess::Closed => Some(format!(
                "the API listens on {} beyond this machine: health, users and docs are open to \
                 the network; the admin routes (connection string, database stop/start/restart) \
                 are disabled. Set PGHARNESS_ADMIN_TOKEN to use them with a bearer token",
                self.bind_host
            )),
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = normalise(host);
        if is_loopback_name(&host) {
            return true;
        }
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.is_loopback() || self.any_address || self.allowed_hosts.contains(&host),
            Err(_) => self.allowed_hosts.contains(&host),
        }
    }
}

/// Refuses requests for another host name (421) and cross-site state changes (403, 415).
pub(super) async fn guard(
    State(context): State<ApiContext>,
    request: Request,
    next: Next,
) -> Response {
    match check(
        &context.access,
        request.method(),
        request.uri(),
        request.headers(),
    ) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn check(
    policy: &AccessPolicy,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    // HTTP/2 carries the host in the URI; HTTP/1.1 in the Host header. A request with neither
    // cannot come from a browser (they always send one), so it cannot be a rebinding attack.
    let authority = uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| text(headers, header::HOST).map(str::to_owned));
    if let Some(authority) = &authority {
        let host = host_of(authority);
        if !policy.host_allowed(host) {
            return Err(ApiError::MisdirectedRequest(format!(
                "this server does not answer to the host name {host:?}: it serves localhost, \
                 loopback addresses, APP_HOST and the names in PGHARNESS_ALLOWED_HOSTS. To reach it \
                 under this name on purpose, add the name to PGHARNESS_ALLOWED_HOSTS"
            )));
        }
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if let Some(origin) = text(headers, header::ORIGIN) {
        let same_origin = authority.as_deref().is_some_and(|authority| {
            ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(authority))
            })
        });
        if !same_origin {
            return Err(ApiError::Forbidden(format!(
                "cross-site request refused: a page from {origin} may not change anything here. \
                 Use this server's own pages, or a client that is not a browser"
            )));
        }
    } else if let Some(site) = text(headers, "sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Err(ApiError::Forbidden(format!(
            "cross-site request refused (Sec-Fetch-Site: {site}): only this server's own pages \
             may change anything here"
        )));
    }
    // Anything but JSON could come from a cross-site form or a `no-cors` fetch, which the
    // browser sends without asking this server first.
    if let Some(content_type) = text(headers, header::CONTENT_TYPE)
        && !is_json(content_type)
    {
        return Err(ApiError::UnsupportedMediaType(
            "expected a request with `Content-Type: application/json`, or no body".to_owned(),
        ));
    }
    Ok(())
}

/// Taken by the admin routes: granted on loopback, with the right bearer token beyond it.
#[derive(Debug)]
pub struct AdminGranted;

impl FromRequestParts<ApiContext> for AdminGranted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        match &context.access.admin {
            AdminAccess::Open => Ok(Self),
            AdminAccess::Closed => Err(ApiError::Forbidden(format!(
                "the admin routes are disabled because the API listens on {} beyond this \
                 machine. Set PGHARNESS_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`, \
                 or listen on 127.0.0.1",
                context.access.bind_host
            ))),
            AdminAccess::Token(expected) => {
                let given = text(&parts.headers, header::AUTHORIZATION)
                    .and_then(|value| value.strip_prefix("Bearer "))
                    .map(|token| digest(token.trim()));
                if given.as_ref() == Some(expected) {
                    Ok(Self)
                } else {
                    Err(ApiError::Unauthorized(
                        "this admin route needs `Authorization: Bearer <PGHARNESS_ADMIN_TOKEN>`"
                            .to_owned(),
                    ))
                }
            }
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn text(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// `example.com:8000` → `example.com`; `[::1]:8000` → `::1`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _port)| host)
}

fn strip_brackets(host: &str) -> &str {
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// `localhost` and its subdomains always resolve to loopback (RFC 6761), in browsers too.
fn is_loopback_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}
