use std::collections::HashMap;
use std::time::Duration;

use pgharness::config::{Config, ConfigError, DatabaseTarget, Environment};
use rstest::rstest;
use sqlx::postgres::PgSslMode;

fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let variables: HashMap<String, String> = pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect();
    Config::from_lookup(|name| variables.get(name).cloned())
}

fn error_text(pairs: &[(&str, &str)]) -> String {
    match config_from(pairs) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn defaults_are_the_guides() {
    let config = config_from(&[]).unwrap();
    assert_eq!(config.environment, Environment::Development);
    assert_eq!(config.pool.size, 5);
    assert_eq!(config.pool.max_overflow, 10);
    assert_eq!(config.pool.timeout, Duration::from_secs(30));
    assert_eq!(config.pool.recycle, Duration::from_hours(1));
    assert!(!config.pool.echo);
    assert!(matches!(config.database, DatabaseTarget::Embedded));
    assert_eq!(config.embedded.database, "app_db");
    assert_eq!(config.embedded.port, None);
}

#[rstest]
#[case("development", 5, 10)]
#[case("testing", 5, 5)]
#[case("staging", 20, 10)]
#[case("Production", 50, 20)]
fn app_env_selects_the_pool_sizing_row(
    #[case] environment: &str,
    #[case] size: u32,
    #[case] overflow: u32,
) {
    let config = config_from(&[
        ("APP_ENV", environment),
        ("DATABASE_URL", "postgresql://u:p@db:5432/x"),
    ])
    .unwrap();
    assert_eq!(
        (config.pool.size, config.pool.max_overflow),
        (size, overflow)
    );
    assert_eq!(config.pool.max_connections(), size + overflow);
}

#[test]
fn explicit_variables_override_the_preset() {
    let config = config_from(&[
        ("APP_ENV", "staging"),
        ("DATABASE_POOL_SIZE", "7"),
        ("DATABASE_MAX_OVERFLOW", "0"),
        ("DATABASE_POOL_TIMEOUT", "3"),
        ("DATABASE_POOL_RECYCLE", "60"),
        ("DATABASE_ECHO", "true"),
    ])
    .unwrap();
    assert_eq!(config.pool.size, 7);
    assert_eq!(config.pool.max_overflow, 0);
    assert_eq!(config.pool.timeout, Duration::from_secs(3));
    assert_eq!(config.pool.recycle, Duration::from_mins(1));
    assert!(config.pool.echo);
}

#[rstest]
#[case("DATABASE_POOL_SIZE", "five", "not a whole number")]
#[case("DATABASE_POOL_SIZE", "-1", "negative")]
#[case("DATABASE_POOL_SIZE", "0", "too small")]
#[case("DATABASE_MAX_OVERFLOW", "-3", "negative")]
#[case("DATABASE_POOL_TIMEOUT", "30s", "not a whole number")]
#[case("DATABASE_POOL_RECYCLE", "0", "too small")]
#[case("DATABASE_ECHO", "maybe", "not a boolean")]
#[case("PGHARNESS_PG_PORT", "70000", "too large")]
#[case("APP_ENV", "prod-eu", "unknown environment")]
#[case(
    "PGHARNESS_EXTENSIONS",
    "vector,postgis",
    "\"postgis\" is not an extension the harness can provide"
)]
fn bad_values_are_named_with_what_is_allowed(
    #[case] variable: &str,
    #[case] value: &str,
    #[case] reason: &str,
) {
    let text = error_text(&[(variable, value)]);
    assert!(
        text.starts_with(&format!("{variable}=\"{value}\"")),
        "{text}"
    );
    assert!(text.contains(reason), "{text}");
    assert!(text.contains("Allowed:"), "{text}");
}

#[rstest]
#[case("mysql://root:hunter2@db/app", "unknown scheme `mysql`")]
#[case("postgresql://root:hunter2@:5432/app", "empty host")]
#[case("postgresql://root:hunter2@db:notaport/app", "not a URL")]
#[case(
    "postgresql://root:hunter2@db/app?sslmode=sometimes",
    "unknown sslmode `sometimes`"
)]
#[case(
    "postgresql://root:hunter2@db/app?sslmod=require",
    "unknown query parameter `sslmod`"
)]
fn bad_urls_are_refused_without_showing_the_password(#[case] url: &str, #[case] reason: &str) {
    let text = error_text(&[("DATABASE_URL", url)]);
    assert!(text.starts_with("DATABASE_URL="), "{text}");
    assert!(text.contains(reason), "{text}");
    assert!(!text.contains("hunter2"), "password leaked: {text}");
    assert!(text.contains("root:********@"), "{text}");
}

#[rstest]
#[case(
    "postgresql+asyncpg://postgres:postgres@localhost:5432/app_db",
    PgSslMode::Prefer
)]
#[case("postgres://postgres:postgres@localhost/app_db", PgSslMode::Prefer)]
#[case(
    "postgresql://postgres:postgres@localhost:5432/app_db?ssl=require",
    PgSslMode::Require
)]
#[case(
    "postgresql://postgres:postgres@localhost:5432/app_db?sslmode=disable",
    PgSslMode::Disable
)]
#[case(
    "postgresql://postgres:postgres@localhost:5432/app_db?sslmode=verify-full",
    PgSslMode::VerifyFull
)]
fn the_guides_url_forms_are_accepted(#[case] url: &str, #[case] ssl_mode: PgSslMode) {
    let config = config_from(&[("DATABASE_URL", url)]).unwrap();
    let DatabaseTarget::External(parsed) = &config.database else {
        panic!("a URL must mean an external server");
    };
    assert_eq!(parsed.masked(), "localhost:5432/app_db");
    assert_eq!(format!("{:?}", parsed.ssl_mode), format!("{ssl_mode:?}"));
}

#[test]
fn display_and_debug_never_show_the_password() {
    let config = config_from(&[(
        "DATABASE_URL",
        "postgresql+asyncpg://dbuser:s3cr3t-pw@db.example.com:5432/app_production",
    )])
    .unwrap();
    let shown = format!("{config} {config:?}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    assert!(
        shown.contains("db.example.com:5432/app_production"),
        "{shown}"
    );
}

#[test]
fn extensions_are_a_comma_separated_list_of_known_names() {
    let config = config_from(&[("PGHARNESS_EXTENSIONS", " Vector, vector ,")]).unwrap();
    assert_eq!(
        config.embedded.extensions,
        vec![pgharness::binaries::extensions::Extension::Vector]
    );
    assert!(
        error_text(&[("PGHARNESS_EXTENSIONS", "postgis")])
            .contains("Allowed: a comma-separated list of: vector")
    );
}

#[test]
fn production_refuses_the_embedded_server_unless_allowed() {
    let text = error_text(&[("APP_ENV", "production")]);
    assert!(text.contains("DATABASE_URL"), "{text}");
    assert!(
        text.contains("PGHARNESS_ALLOW_EMBEDDED_IN_PRODUCTION"),
        "{text}"
    );
    let allowed = config_from(&[
        ("APP_ENV", "production"),
        ("DATABASE_URL", "embedded"),
        ("PGHARNESS_ALLOW_EMBEDDED_IN_PRODUCTION", "true"),
    ])
    .unwrap();
    assert!(matches!(allowed.database, DatabaseTarget::Embedded));
}

#[test]
fn a_broken_dotenv_file_is_reported_without_its_contents() {
    let directory = pgharness::platform::files::scratch_dir().unwrap();
    let dotenv = directory.path().join(".env");
    std::fs::write(&dotenv, "DATABASE_URL='postgresql://u:leaky@h/db\n").unwrap();
    let text = Config::from_env_and_file(&dotenv).unwrap_err().to_string();
    assert!(text.contains(".env"), "{text}");
    assert!(!text.contains("leaky"), "{text}");
}
