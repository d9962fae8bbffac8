//! `DATABASE_URL` parsing: the guide's `postgresql+asyncpg://` spelling, `postgres://` and
//! `postgresql://`, with `ssl=` / `sslmode=` mapped to TLS modes.

use std::fmt;
use std::fmt::Write as _;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::ConfigError;

const VARIABLE: &str = "DATABASE_URL";
const SCHEMES: &str = "postgresql://, postgres://, postgresql+asyncpg://";
const DEFAULT_PORT: u16 = 5432;

/// A parsed `PostgreSQL` connection URL. The password is kept secret: `Display` and `Debug`
/// show the guide's masked form (`localhost:5432/app_db`).
#[derive(Clone)]
pub struct DatabaseUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub username: String,
    password: Option<SecretString>,
    /// Database name.
    pub database: String,
    /// `sslmode`.
    pub ssl_mode: PgSslMode,
    /// `application_name`, shown in `pg_stat_activity`.
    pub application_name: Option<String>,
    /// A Unix-socket directory of the same server, connected through instead of `host:port`.
    socket_dir: Option<PathBuf>,
}

impl DatabaseUrl {
    /// Parses a `DATABASE_URL` value.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the variable, the value with its password masked, and
    /// what is allowed, for an unknown scheme, a malformed URL or an unknown TLS mode.
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String, allowed: &str| ConfigError::Invalid {
            variable: VARIABLE,
            value: mask_password(raw),
            reason,
            allowed: allowed.to_owned(),
        };
        let url = url::Url::parse(raw).map_err(|error| {
            invalid(
                format!("not a URL ({error})"),
                "postgresql://user:password@host:port/database",
            )
        })?;
        if !matches!(
            url.scheme(),
            "postgresql" | "postgres" | "postgresql+asyncpg"
        ) {
            return Err(invalid(
                format!("unknown scheme `{}`", url.scheme()),
                SCHEMES,
            ));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.trim_matches(['[', ']']).to_owned(),
            _ => {
                return Err(invalid(
                    "no host".to_owned(),
                    "postgresql://user:password@host:port/database",
                ));
            }
        };
        let username = percent_decode(url.username()).unwrap_or_default();
        let username = if username.is_empty() {
            "postgres".to_owned()
        } else {
            username
        };
        let password = url
            .password()
            .and_then(percent_decode)
            .map(SecretString::from);
        let database = percent_decode(url.path().trim_start_matches('/'))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| username.clone());

        let (ssl_mode, application_name) = query_options(&url, &invalid)?;
        Ok(Self {
            host,
            port: url.port().unwrap_or(DEFAULT_PORT),
            username,
            password,
            database,
            ssl_mode,
            application_name,
            socket_dir: None,
        })
    }

    /// A URL for a server this process knows the password of (the embedded one).
    #[must_use]
    pub fn local(port: u16, username: &str, password: SecretString, database: &str) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            username: username.to_owned(),
            password: Some(password),
            database: database.to_owned(),
            ssl_mode: PgSslMode::Disable,
            application_name: None,
            socket_dir: None,
        }
    }

    /// The same URL, connected through the server's Unix socket in `directory` (on Unix; other
    /// platforms keep TCP). Shown and handed to tools as before: the server listens on both.
    #[must_use]
    pub fn through_socket(self, directory: PathBuf) -> Self {
        Self {
            socket_dir: Some(directory),
            ..self
        }
    }

    /// The same URL over TCP to another port on the same host (a proxy in front of the server).
    #[must_use]
    pub fn with_tcp_port(&self, port: u16) -> Self {
        Self {
            port,
            socket_dir: None,
            ..self.clone()
        }
    }

    /// The same server, another database.
    #[must_use]
    pub fn with_database(&self, database: &str) -> Self {
        Self {
            database: database.to_owned(),
            ..self.clone()
        }
    }

    /// The guide's masked form: `host:port/database`, no user, no password.
    #[must_use]
    pub fn masked(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{host}:{}/{}", self.port, self.database)
    }

    /// The full URL with its password, for tools such as `psql`. Only for explicit requests:
    /// never log it.
    #[must_use]
    pub fn expose_url(&self) -> String {
        let mut url = format!("postgresql://{}", encode(&self.username));
        if let Some(password) = &self.password {
            url.push(':');
            url.push_str(&encode(password.expose_secret()));
        }
        let _ = write!(
            url,
            "@{}/{}",
            self.masked()
                .rsplit_once('/')
                .map_or("", |(authority, _)| authority),
            encode(&self.database)
        );
        url
    }

    /// Connection options for sqlx.
    #[must_use]
    pub fn connect_options(&self) -> PgConnectOptions {
        let mut options = PgConnectOptions::new_without_pgpass()
            .host(&self.host)
            .port(self.port)
            .username(&self.username)
            .database(&self.database)
            .ssl_mode(self.ssl_mode);
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        if let Some(name) = &self.application_name {
            options = options.application_name(name);
        }
        if cfg!(unix)
            && let Some(directory) = &self.socket_dir
        {
            options = options.socket(directory);
        }
        options
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.masked())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("DatabaseUrl")
            .field("url", &self.masked())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("ssl_mode", &self.ssl_mode)
            .field("socket_dir", &self.socket_dir)
            .finish_non_exhaustive()
    }
}

/// `sslmode` (or `ssl`) and `application_name` from the URL's query; anything else is refused.
fn query_options(
    url: &url::Url,
    invalid: &impl Fn(String, &str) -> ConfigError,
) -> Result<(PgSslMode, Option<String>), ConfigError> {
    let mut ssl_mode = PgSslMode::Prefer;
    let mut application_name = None;
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "sslmode" | "ssl" => {
                ssl_mode = parse_ssl_mode(&value).ok_or_else(|| {
                    invalid(
                        format!("unknown {key} `{value}`"),
                        "disable, allow, prefer, require, verify-ca, verify-full (ssl=true means require)",
                    )
                })?;
            }
            "application_name" => application_name = Some(value.into_owned()),
            other => {
                return Err(invalid(
                    format!("unknown query parameter `{other}`"),
                    "sslmode, ssl, application_name",
                ));
            }
        }
    }
    Ok((ssl_mode, application_name))
}

fn parse_ssl_mode(value: &str) -> Option<PgSslMode> {
    Some(match value.to_ascii_lowercase().as_str() {
        "disable" | "false" => PgSslMode::Disable,
        "allow" => PgSslMode::Allow,
        "prefer" => PgSslMode::Prefer,
        "require" | "true" => PgSslMode::Require,
        "verify-ca" => PgSslMode::VerifyCa,
        "verify-full" => PgSslMode::VerifyFull,
        _ => return None,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Masks the password of a URL that may not even parse, for error messages.
#[must_use]
pub fn mask_password(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_owned();
    };
    let rest = &raw[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return raw.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}://{}:********{}",
            &raw[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => raw.to_owned(),
    }
}
