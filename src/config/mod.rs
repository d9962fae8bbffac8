//! Configuration: the guide's variables (`DATABASE_*`), `APP_ENV` presets, and the embedded
//! server's `PGHARNESS_*` variables. Read from the environment, then from `.env`; the real
//! environment wins.

mod parse;
mod url;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::platform::privilege::RootSettings;

pub(crate) use self::parse::parse_number;
use self::parse::{parse_bool, parse_server_settings, read_dotenv};
pub use self::url::{DatabaseUrl, mask_password};

/// A configuration value that cannot be used, or a combination that is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that is not allowed.
    #[error("{variable}={value:?} is not valid: {reason}. Allowed: {allowed}")]
    Invalid {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
        /// What is allowed.
        allowed: String,
    },
    #[error(
        "APP_ENV=production with no DATABASE_URL would start an embedded PostgreSQL server. \
         Production data belongs on a real server: set DATABASE_URL to it, or set \
         PGHARNESS_ALLOW_EMBEDDED_IN_PRODUCTION=true if an embedded server is really meant"
    )]
    /// `APP_ENV=production` without `DATABASE_URL`: production never runs on the embedded server.
    EmbeddedInProduction,
    #[error("could not read {path}: {message}. Fix the line or remove the file")]
    /// A `.env` file cannot be read.
    DotEnv {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// `APP_ENV`: which row of the guide's pool-sizing table applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// A developer's machine (the default).
    Development,
    /// Automated tests.
    Testing,
    /// A pre-production deployment.
    Staging,
    /// Production: needs `DATABASE_URL`.
    Production,
}

impl Environment {
    const ALLOWED: &'static str = "development, testing, staging, production";

    /// The guide's pool-sizing row: (pool size, max overflow).
    #[must_use]
    pub fn pool_preset(self) -> (u32, u32) {
        match self {
            Self::Development => (5, 10),
            Self::Testing => (5, 5),
            Self::Staging => (20, 10),
            Self::Production => (50, 20),
        }
    }

    /// The name `APP_ENV` takes.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Testing => "testing",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl FromStr for Environment {
    type Err = ();

    fn from_str(value: &str) -> Result<Self, ()> {
        match value.trim().to_ascii_lowercase().as_str() {
            "development" => Ok(Self::Development),
            "testing" => Ok(Self::Testing),
            "staging" => Ok(Self::Staging),
            "production" => Ok(Self::Production),
            _ => Err(()),
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The guide's pool semantics, in the guide's units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// `DATABASE_POOL_SIZE`: connections kept open.
    pub size: u32,
    /// `DATABASE_MAX_OVERFLOW`: extra connections opened under load, closed when idle.
    pub max_overflow: u32,
    /// `DATABASE_POOL_TIMEOUT`: how long a request waits for a connection.
    pub timeout: Duration,
    /// `DATABASE_POOL_RECYCLE`: the age after which a connection is replaced.
    pub recycle: Duration,
    /// `DATABASE_ECHO`: log every statement.
    pub echo: bool,
    /// `PGHARNESS_SLOW_QUERY_MS`: statements slower than this are logged as warnings.
    pub slow_statement: Duration,
}

impl PoolSettings {
    /// The guide's defaults for an environment: its pool-sizing row, a 30 s timeout, connections
    /// recycled after an hour, no echo, statements over 1 s logged as slow.
    #[must_use]
    pub fn preset(environment: Environment) -> Self {
        let (size, max_overflow) = environment.pool_preset();
        Self {
            size,
            max_overflow,
            timeout: Duration::from_secs(30),
            recycle: Duration::from_hours(1),
            echo: false,
            slow_statement: Duration::from_secs(1),
        }
    }

    /// The most connections the pool opens: size plus overflow.
    #[must_use]
    pub fn max_connections(&self) -> u32 {
        self.size + self.max_overflow
    }
}

/// Where the database is: a server named by `DATABASE_URL`, or the embedded one.
#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    /// `DATABASE_URL`: a server run elsewhere.
    External(DatabaseUrl),
    /// No `DATABASE_URL`: the embedded server.
    Embedded,
}

/// The embedded server's settings (`PGHARNESS_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedSettings {
    /// `PGHARNESS_DATA_DIR`: holds the cluster, its password file and the server state.
    pub data_dir: PathBuf,
    /// `PGHARNESS_PG_BIN_DIR`: a `PostgreSQL` 16 `bin` directory to use instead of a download.
    pub bin_dir: Option<PathBuf>,
    /// `PGHARNESS_CACHE_DIR`: where downloaded binaries are kept (`postgresql_embedded`'s layout).
    pub cache_dir: PathBuf,
    /// `PGHARNESS_PG_PORT`: `None` picks a free port.
    pub port: Option<u16>,
    /// `PGHARNESS_DATABASE`: the application database, created if missing.
    pub database: String,
    /// `PGHARNESS_PG_CONF`: `postgresql.conf` settings, `key=value` separated by `;`.
    pub configuration: BTreeMap<String, String>,
    /// `PGHARNESS_RUN_AS`: the account `PostgreSQL` runs as when this is root.
    pub root: RootSettings,
    /// `PGHARNESS_EXTENSIONS`: extensions put into the binaries' installation.
    pub extensions: Vec<crate::binaries::extensions::Extension>,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `APP_ENV`.
    pub environment: Environment,
    /// Which server the application uses.
    pub database: DatabaseTarget,
    /// The embedded server's settings: used when `database` is `Embedded`, and for the
    /// throwaway server of `migrate check` against an external database.
    pub embedded: EmbeddedSettings,
    /// The pool (`DATABASE_POOL_*`).
    pub pool: PoolSettings,
    /// Migrations (`PGHARNESS_AUTO_MIGRATE`, the directory).
    pub migrations: MigrationSettings,
    /// The HTTP API (`APP_HOST`, `APP_PORT`, allowed hosts, admin token).
    pub api: ApiSettings,
    /// Logs.
    pub logging: LogSettings,
    /// Resetting and seeding the dev database from the UI.
    pub dev_data: DevDataSettings,
}

/// The UI's "Reset database" and "Load fixture": allowed in development and testing only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevDataSettings {
    /// `PGHARNESS_FIXTURES_DIR`: the SQL fixtures offered (default `fixtures` in the current
    /// directory).
    pub fixtures_dir: PathBuf,
    /// `PGHARNESS_DEV_DATA_ON_EXTERNAL`: also on a server named by `DATABASE_URL` (default no:
    /// an external database is usually shared).
    pub allow_external: bool,
}

/// Where the HTTP API listens, and who may use it.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `APP_HOST`.
    pub host: String,
    /// `APP_PORT`; 0 picks a free port.
    pub port: u16,
    /// `PGHARNESS_ALLOWED_HOSTS`: host names accepted in the `Host` header besides loopback
    /// and `APP_HOST` (comma-separated), e.g. the name of a reverse proxy in front of the API.
    pub allowed_hosts: Vec<String>,
    /// `PGHARNESS_ADMIN_TOKEN`: bearer token that opens the admin routes (connection string,
    /// database stop/start/restart) when the API listens beyond loopback.
    pub admin_token: Option<SecretString>,
}

/// How logs are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// `PGHARNESS_LOG_FORMAT=json`: JSON lines instead of human-readable text.
    pub json: bool,
    /// `PGHARNESS_LOG_DIR`: daily rolling log files (the guide's `logs/`); `off` for none.
    pub dir: Option<PathBuf>,
}

/// Where migrations come from and when they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationSettings {
    /// `PGHARNESS_MIGRATIONS_DIR`: read migrations from this directory at run time instead of
    /// those built into the binary (for other crates, and for trying out new files).
    pub dir: Option<PathBuf>,
    /// `PGHARNESS_AUTO_MIGRATE`: `serve` applies pending migrations at start.
    pub apply_on_start: bool,
}

impl fmt::Display for Config {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let database = match &self.database {
            DatabaseTarget::External(url) => url.masked(),
            DatabaseTarget::Embedded => format!(
                "embedded PostgreSQL 16, database {} in {}",
                self.embedded.database,
                self.embedded.data_dir.display()
            ),
        };
        write!(
            formatter,
            "environment {}, database {database}, pool {} + {} overflow, timeout {}s, recycle {}s, echo {}",
            self.environment,
            self.pool.size,
            self.pool.max_overflow,
            self.pool.timeout.as_secs(),
            self.pool.recycle.as_secs(),
            self.pool.echo
        )
    }
}

impl Config {
    /// Reads the process environment, then `.env` in the current directory if present.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad variable, its value and what is allowed.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_and_file(Path::new(".env"))
    }

    /// Reads the process environment, then the given dotenv file if present.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad variable, its value and what is allowed.
    pub fn from_env_and_file(dotenv: &Path) -> Result<Self, ConfigError> {
        let dotenv = read_dotenv(dotenv)?;
        Self::from_lookup(|name| {
            std::env::var(name)
                .ok()
                .or_else(|| dotenv.get(name).cloned())
        })
    }

    /// Reads the process environment only, no `.env` file (test harnesses, benchmarks).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad variable, its value and what is allowed.
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable lookup (the environment, a map in tests).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first bad variable, its value and what is allowed.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let environment = environment(&var)?;
        Ok(Self {
            environment,
            database: database_target(&var, environment)?,
            embedded: embedded_settings(&var)?,
            pool: pool_settings(&var, environment)?,
            migrations: MigrationSettings {
                dir: var("PGHARNESS_MIGRATIONS_DIR").map(PathBuf::from),
                apply_on_start: parse_bool(&var, "PGHARNESS_AUTO_MIGRATE", true)?,
            },
            api: api_settings(&var)?,
            logging: log_settings(&var)?,
            dev_data: DevDataSettings {
                fixtures_dir: var("PGHARNESS_FIXTURES_DIR")
                    .map_or_else(|| PathBuf::from("fixtures"), PathBuf::from),
                allow_external: parse_bool(&var, "PGHARNESS_DEV_DATA_ON_EXTERNAL", false)?,
            },
        })
    }
}

fn environment(var: &impl Fn(&str) -> Option<String>) -> Result<Environment, ConfigError> {
    match var("APP_ENV") {
        None => Ok(Environment::Development),
        Some(value) => value.parse().map_err(|()| ConfigError::Invalid {
            variable: "APP_ENV",
            value: value.clone(),
            reason: "unknown environment".to_owned(),
            allowed: Environment::ALLOWED.to_owned(),
        }),
    }
}

/// The environment's preset, each value overridable by its variable.
fn pool_settings(
    var: &impl Fn(&str) -> Option<String>,
    environment: Environment,
) -> Result<PoolSettings, ConfigError> {
    let preset = PoolSettings::preset(environment);
    let seconds = |name, default: Duration| {
        parse_number(var, name, default.as_secs(), 1).map(Duration::from_secs)
    };
    Ok(PoolSettings {
        size: parse_number(var, "DATABASE_POOL_SIZE", preset.size, 1)?,
        max_overflow: parse_number(var, "DATABASE_MAX_OVERFLOW", preset.max_overflow, 0)?,
        timeout: seconds("DATABASE_POOL_TIMEOUT", preset.timeout)?,
        recycle: seconds("DATABASE_POOL_RECYCLE", preset.recycle)?,
        echo: parse_bool(var, "DATABASE_ECHO", preset.echo)?,
        slow_statement: Duration::from_millis(parse_number(
            var,
            "PGHARNESS_SLOW_QUERY_MS",
            u64::try_from(preset.slow_statement.as_millis()).unwrap_or(1000),
            1,
        )?),
    })
}

/// `DATABASE_URL`, else the embedded server (refused in production unless allowed).
fn database_target(
    var: &impl Fn(&str) -> Option<String>,
    environment: Environment,
) -> Result<DatabaseTarget, ConfigError> {
    match var("DATABASE_URL") {
        Some(url) if !url.trim().eq_ignore_ascii_case("embedded") => {
            Ok(DatabaseTarget::External(DatabaseUrl::parse(url.trim())?))
        }
        _ => {
            let allowed = parse_bool(var, "PGHARNESS_ALLOW_EMBEDDED_IN_PRODUCTION", false)?;
            if environment == Environment::Production && !allowed {
                return Err(ConfigError::EmbeddedInProduction);
            }
            Ok(DatabaseTarget::Embedded)
        }
    }
}

fn api_settings(var: &impl Fn(&str) -> Option<String>) -> Result<ApiSettings, ConfigError> {
    Ok(ApiSettings {
        host: var("APP_HOST").unwrap_or_else(|| "127.0.0.1".to_owned()),
        port: parse_number(var, "APP_PORT", 8000, 0)?,
        allowed_hosts: var("PGHARNESS_ALLOWED_HOSTS")
            .map(|names| {
                names
                    .split(',')
                    .map(|name| name.trim().to_ascii_lowercase())
                    .filter(|name| !name.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        admin_token: admin_token(var)?,
    })
}

fn log_settings(var: &impl Fn(&str) -> Option<String>) -> Result<LogSettings, ConfigError> {
    let json = match var("PGHARNESS_LOG_FORMAT").as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ConfigError::Invalid {
                variable: "PGHARNESS_LOG_FORMAT",
                value: other.to_owned(),
                reason: "unknown format".to_owned(),
                allowed: "text, json".to_owned(),
            });
        }
    };
    let dir = match var("PGHARNESS_LOG_DIR") {
        Some(dir) if dir.eq_ignore_ascii_case("off") => None,
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(PathBuf::from("logs")),
    };
    Ok(LogSettings { json, dir })
}

/// Shortest `PGHARNESS_ADMIN_TOKEN` accepted: it guards the database's password.
const ADMIN_TOKEN_MIN_LENGTH: usize = 16;

fn admin_token(var: &impl Fn(&str) -> Option<String>) -> Result<Option<SecretString>, ConfigError> {
    let Some(token) = var("PGHARNESS_ADMIN_TOKEN") else {
        return Ok(None);
    };
    let token = token.trim();
    if token.chars().count() < ADMIN_TOKEN_MIN_LENGTH {
        return Err(ConfigError::Invalid {
            variable: "PGHARNESS_ADMIN_TOKEN",
            // The value itself is a secret: never echoed.
            value: "…".to_owned(),
            reason: format!("shorter than {ADMIN_TOKEN_MIN_LENGTH} characters"),
            allowed: "a random string of 16 characters or more, e.g. `openssl rand -hex 24`"
                .to_owned(),
        });
    }
    Ok(Some(SecretString::from(token.to_owned())))
}

/// Root's defaults, outside its home: `PostgreSQL` runs as an unprivileged account then, which
/// must reach the data and the binaries (src/platform/privilege.rs).
pub const ROOT_DATA_DIR: &str = "/var/lib/pgharness";
/// See [`ROOT_DATA_DIR`].
pub const ROOT_CACHE_DIR: &str = "/var/cache/pgharness/postgresql";

fn is_root() -> bool {
    crate::platform::privilege::is_root()
}

fn embedded_settings(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<EmbeddedSettings, ConfigError> {
    let home = dirs::home_dir().unwrap_or_else(std::env::temp_dir);
    let port = match parse_number::<u16>(var, "PGHARNESS_PG_PORT", 0, 0)? {
        0 => None,
        port => Some(port),
    };
    let database = var("PGHARNESS_DATABASE").unwrap_or_else(|| "app_db".to_owned());
    if database.len() > 63 || database.contains('\0') {
        return Err(ConfigError::Invalid {
            variable: "PGHARNESS_DATABASE",
            value: database,
            reason: "not a PostgreSQL database name".to_owned(),
            allowed: "1 to 63 bytes, no NUL".to_owned(),
        });
    }
    let configuration = match var("PGHARNESS_PG_CONF") {
        None => BTreeMap::new(),
        Some(text) => parse_server_settings(&text)?,
    };
    Ok(EmbeddedSettings {
        data_dir: var("PGHARNESS_DATA_DIR").map_or_else(
            || {
                if is_root() {
                    PathBuf::from(ROOT_DATA_DIR)
                } else {
                    dirs::data_dir()
                        .unwrap_or_else(|| home.join(".local/share"))
                        .join("pgharness")
                }
            },
            PathBuf::from,
        ),
        bin_dir: var("PGHARNESS_PG_BIN_DIR").map(PathBuf::from),
        cache_dir: var("PGHARNESS_CACHE_DIR").map_or_else(
            || {
                if is_root() {
                    PathBuf::from(ROOT_CACHE_DIR)
                } else {
                    home.join(".theseus").join("postgresql")
                }
            },
            PathBuf::from,
        ),
        port,
        database,
        configuration,
        root: root_settings(var),
        extensions: extensions(var)?,
    })
}

/// `PGHARNESS_EXTENSIONS=vector`: known names, separated by commas.
fn extensions(
    var: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<crate::binaries::extensions::Extension>, ConfigError> {
    use crate::binaries::extensions::Extension;
    let text = var("PGHARNESS_EXTENSIONS").unwrap_or_default();
    let mut extensions = Vec::new();
    for name in text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let extension = name
            .parse::<Extension>()
            .map_err(|()| ConfigError::Invalid {
                variable: "PGHARNESS_EXTENSIONS",
                value: text.clone(),
                reason: format!("{name:?} is not an extension the harness can provide"),
                allowed: format!("a comma-separated list of: {}", Extension::known()),
            })?;
        if !extensions.contains(&extension) {
            extensions.push(extension);
        }
    }
    Ok(extensions)
}

fn root_settings(var: &impl Fn(&str) -> Option<String>) -> RootSettings {
    RootSettings {
        account: var("PGHARNESS_RUN_AS").unwrap_or_else(|| RootSettings::default().account),
    }
}
