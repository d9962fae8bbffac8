//! Who may use the API. A local server is still a server: any web page the developer visits can
//! send requests to 127.0.0.1, so
//! - the `Host` check refuses names that are not this server's (DNS rebinding: a page whose name
//!   now resolves to 127.0.0.1 would otherwise read every answer, the password included);
//! - the cross-site check refuses state-changing requests from another origin, and bodies a
//!   cross-site "simple request" can send without a CORS preflight (CSRF);
//! - the admin routes (connection string, database control) need a secret, on loopback too:
//!   another account on the same machine reaches 127.0.0.1 as easily as the developer does. The
//!   secret is `PGHARNESS_ADMIN_TOKEN` when set, else one generated at first start and kept
//!   owner-only beside the data ([`load_or_create_admin_token`]). `serve` prints it in the UI's
//!   link (`/?token=…`), which trades it for an `HttpOnly`, `SameSite=Strict` cookie; other
//!   clients send `Authorization: Bearer <token>`. Beyond loopback only an explicit
//!   `PGHARNESS_ADMIN_TOKEN` opens them.

use std::net::IpAddr;
use std::path::Path;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

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
    /// Listening on loopback only.
    loopback: bool,
    admin: AdminAccess,
}

#[derive(Debug, Clone)]
enum AdminAccess {
    /// The token's SHA-256, compared (in constant time) instead of the token itself.
    Token([u8; 32]),
    /// Beyond loopback without `PGHARNESS_ADMIN_TOKEN`.
    Closed,
}

/// Where the generated admin token is kept, in the data directory.
const ADMIN_TOKEN_FILE: &str = "admin-token";
/// The cookie the UI's link is traded for, per port: cookies are shared by every port of a host,
/// and two servers on one machine have different tokens.
const ADMIN_COOKIE_PREFIX: &str = "pgharness_admin_";

/// The token that opens the admin routes: `PGHARNESS_ADMIN_TOKEN` when set; else, for an API on
/// loopback, the one kept in `keep_in` (the data directory) when given; else one for this
/// process only (beyond loopback without `PGHARNESS_ADMIN_TOKEN` the admin routes are closed,
/// and nothing is written: a production container's file system may be read-only).
///
/// # Errors
///
/// The I/O error of reading or creating the kept token, or of the random source.
pub fn admin_token(
    settings: &ApiSettings,
    keep_in: Option<&Path>,
) -> std::io::Result<SecretString> {
    if let Some(token) = &settings.admin_token {
        return Ok(token.clone());
    }
    match keep_in {
        Some(dir) if listens_on_loopback(&settings.host) => load_or_create_admin_token(dir),
        _ => Ok(SecretString::from(crate::platform::random::alphanumeric(
            32,
        )?)),
    }
}

/// Whether `host` (`APP_HOST`) is a loopback name or address.
fn listens_on_loopback(host: &str) -> bool {
    let host = normalise(strip_brackets(host));
    is_loopback_name(&host) || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The admin token kept in `dir` (`admin-token`, owner-only), created with 32 random letters
/// and digits on first use.
///
/// # Errors
///
/// The I/O error of reading, creating or writing the file.
pub fn load_or_create_admin_token(dir: &Path) -> std::io::Result<SecretString> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if token.trim().len() >= 16 => return Ok(SecretString::from(token.trim())),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let token = crate::platform::random::alphanumeric(32)?;
    std::fs::create_dir_all(dir)?;
    crate::platform::files::write_private(&path, token.as_bytes())?;
    Ok(SecretString::from(token))
}

impl AccessPolicy {
    /// The policy for an API listening on `settings.host`; `local_token` opens the admin routes
    /// on loopback when `PGHARNESS_ADMIN_TOKEN` is not set.
    #[must_use]
    pub fn new(settings: &ApiSettings, local_token: &SecretString) -> Self {
        let host = normalise(strip_brackets(&settings.host));
        let address = host.parse::<IpAddr>().ok();
        let loopback = listens_on_loopback(&host);
        let mut allowed_hosts = settings
            .allowed_hosts
            .iter()
            .map(|name| normalise(name))
            .collect::<Vec<_>>();
        if address.is_none_or(|ip| !ip.is_unspecified()) {
            allowed_hosts.push(host);
        }
        let admin = match (&settings.admin_token, loopback) {
            (Some(token), _) => AdminAccess::Token(digest(token.expose_secret())),
            (None, true) => AdminAccess::Token(digest(local_token.expose_secret())),
            (None, false) => AdminAccess::Closed,
        };
        Self {
            allowed_hosts,
            any_address: address.is_some_and(|ip| ip.is_unspecified()),
            bind_host: settings.host.clone(),
            loopback,
            admin,
        }
    }

    /// What is reachable from other machines, for the start-up message; `None` on loopback.
    #[must_use]
    pub fn exposure(&self) -> Option<String> {
        if self.loopback {
            return None;
        }
        match self.admin {
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

    /// Whether a token opens the admin routes (else they are closed).
    #[must_use]
    pub fn admin_by_token(&self) -> bool {
        matches!(self.admin, AdminAccess::Token(_))
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
    let authority = match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => header_text(headers, header::HOST).map_err(|()| unreadable_host())?,
    };
    if let Some(authority) = authority {
        let host = host_of(authority).ok_or_else(unreadable_host)?;
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
    // A value that cannot be read counts as the unsafe one: the guard never fails open.
    let cross_site = |detail: String| ApiError::Forbidden(detail);
    match header_text(headers, header::ORIGIN) {
        Err(()) => {
            return Err(cross_site(
                "cross-site request refused: the Origin header cannot be read".to_owned(),
            ));
        }
        Ok(Some(origin)) => {
            let same_origin = authority.is_some_and(|authority| {
                ["http://", "https://"].iter().any(|scheme| {
                    origin
                        .strip_prefix(scheme)
                        .is_some_and(|rest| rest.eq_ignore_ascii_case(authority))
                })
            });
            if !same_origin {
                return Err(cross_site(format!(
                    "cross-site request refused: a page from {origin} may not change anything \
                     here. Use this server's own pages, or a client that is not a browser"
                )));
            }
        }
        Ok(None) => match header_text(headers, "sec-fetch-site") {
            Ok(None | Some("same-origin" | "none")) => {}
            Ok(Some(site)) => {
                return Err(cross_site(format!(
                    "cross-site request refused (Sec-Fetch-Site: {site}): only this server's own \
                     pages may change anything here"
                )));
            }
            Err(()) => {
                return Err(cross_site(
                    "cross-site request refused: Sec-Fetch-Site cannot be read".to_owned(),
                ));
            }
        },
    }
    // Anything but JSON could come from a cross-site form or a `no-cors` fetch, which the
    // browser sends without asking this server first.
    match header_text(headers, header::CONTENT_TYPE) {
        Ok(None) => Ok(()),
        Ok(Some(content_type)) if is_json(content_type) => Ok(()),
        Ok(Some(_)) | Err(()) => Err(ApiError::UnsupportedMediaType(
            "expected a request with `Content-Type: application/json`, or no body".to_owned(),
        )),
    }
}

fn unreadable_host() -> ApiError {
    ApiError::MisdirectedRequest(
        "this server does not answer to that Host header: it is not a host name and port"
            .to_owned(),
    )
}

/// Taken by the admin routes: granted with the admin token, as a bearer token or as the cookie
/// the UI's link (`/?token=…`) sets.
#[derive(Debug)]
pub struct AdminGranted;

impl FromRequestParts<ApiContext> for AdminGranted {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        context: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        context.access.admin_status(&parts.headers).map(|()| Self)
    }
}

impl AccessPolicy {
    /// Whether a request with these headers may use the admin routes, and if not why.
    ///
    /// # Errors
    ///
    /// [`ApiError::Forbidden`] when the admin routes are closed beyond loopback,
    /// [`ApiError::Unauthorized`] when the token is missing or wrong.
    pub(super) fn admin_status(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        match &self.admin {
            AdminAccess::Closed => Err(ApiError::Forbidden(format!(
                "the admin routes are disabled because the API listens on {} beyond this \
                 machine. Set PGHARNESS_ADMIN_TOKEN and send it as `Authorization: Bearer <token>`, \
                 or listen on 127.0.0.1",
                self.bind_host
            ))),
            AdminAccess::Token(expected) => {
                let bearer = header_text(headers, header::AUTHORIZATION)
                    .ok()
                    .flatten()
                    .and_then(|value| value.strip_prefix("Bearer "));
                let cookie = cookie_name(headers).and_then(|name| cookie_value(headers, &name));
                if bearer
                    .into_iter()
                    .chain(cookie)
                    .any(|token| matches(expected, token))
                {
                    Ok(())
                } else if self.loopback {
                    Err(ApiError::Unauthorized(
                        "this admin route needs the admin token: open the link `pgharness serve` \
                         printed (`pgharness url` prints it again), or send `Authorization: \
                         Bearer <token>`"
                            .to_owned(),
                    ))
                } else {
                    Err(ApiError::Unauthorized(
                        "this admin route needs `Authorization: Bearer <PGHARNESS_ADMIN_TOKEN>`"
                            .to_owned(),
                    ))
                }
            }
        }
    }

    /// The answer to the UI's link `/?token=…`: back to `/` without the token in the address
    /// bar, with the cookie that stands for it when it is right.
    pub(super) fn exchange_link_token(&self, headers: &HeaderMap, token: &str) -> Response {
        let mut response = (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, HeaderValue::from_static("/"))],
        )
            .into_response();
        if let (AdminAccess::Token(expected), Some(name)) = (&self.admin, cookie_name(headers))
            && matches(expected, token)
            && let Ok(cookie) = HeaderValue::from_str(&format!(
                "{name}={token}; HttpOnly; SameSite=Strict; Path=/"
            ))
        {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        response
    }
}

fn matches(expected: &[u8; 32], token: &str) -> bool {
    bool::from(digest(token.trim()).ct_eq(expected))
}

/// `pgharness_admin_<port>`, from the port the request was sent to.
fn cookie_name(headers: &HeaderMap) -> Option<String> {
    let authority = header_text(headers, header::HOST)
        .ok()
        .flatten()?
        .parse::<axum::http::uri::Authority>()
        .ok()?;
    Some(format!(
        "{ADMIN_COOKIE_PREFIX}{}",
        authority.port_u16().unwrap_or(80)
    ))
}

fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A header's value: `Ok(None)` when absent, `Err` when present but not visible ASCII.
fn header_text(
    headers: &HeaderMap,
    name: impl axum::http::header::AsHeaderName,
) -> Result<Option<&str>, ()> {
    headers
        .get(name)
        .map(|value| value.to_str().map_err(|_| ()))
        .transpose()
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

/// `example.com:8000` → `example.com`; `[::1]:8000` → `::1`; `None` for what is not a host
/// and an optional port (user info, a port that is not a number).
fn host_of(authority: &str) -> Option<&str> {
    if authority.contains('@') || authority.parse::<axum::http::uri::Authority>().is_err() {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':')?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    port.is_none_or(|port| port.parse::<u16>().is_ok())
        .then_some(host)
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
