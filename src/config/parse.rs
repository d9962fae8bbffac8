//! Reading values: numbers, booleans, `PostgreSQL` settings and the `.env` file, each failure an
//! error naming the variable, the value and what is allowed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use super::ConfigError;

/// `max_connections=200; shared_buffers=256MB` into a map.
pub(super) fn parse_server_settings(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut settings = BTreeMap::new();
    for item in text
        .split(';')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let parsed = item.split_once('=').and_then(|(key, value)| {
            let key = key.trim();
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|character| character.is_ascii_alphanumeric() || "_.".contains(character));
            valid.then(|| (key.to_owned(), value.trim().to_owned()))
        });
        let Some((key, value)) = parsed else {
            return Err(ConfigError::Invalid {
                variable: "PGHARNESS_PG_CONF",
                value: text.to_owned(),
                reason: format!("`{item}` is not key=value"),
                allowed: "postgresql.conf settings separated by `;`, e.g. max_connections=200; shared_buffers=256MB".to_owned(),
            });
        };
        settings.insert(key, value);
    }
    Ok(settings)
}

/// `variable` as a whole number of at least `minimum`, `default` when unset.
pub(crate) fn parse_number<T>(
    var: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: T,
    minimum: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(value) = var(variable) else {
        return Ok(default);
    };
    let invalid = |reason: &str| ConfigError::Invalid {
        variable,
        value: value.clone(),
        reason: reason.to_owned(),
        allowed: format!("a whole number, at least {minimum}"),
    };
    let number: T = value
        .trim()
        .parse()
        .map_err(|_| match value.trim().parse::<i128>() {
            Ok(whole) if whole < 0 => invalid("negative"),
            Ok(_) => invalid("too large"),
            Err(_) => invalid("not a whole number"),
        })?;
    if number < minimum {
        return Err(invalid("too small"));
    }
    Ok(number)
}

pub(super) fn parse_bool(
    var: &impl Fn(&str) -> Option<String>,
    variable: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    let Some(value) = var(variable) else {
        return Ok(default);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::Invalid {
            variable,
            value,
            reason: "not a boolean".to_owned(),
            allowed: "true, false, 1, 0, yes, no, on, off".to_owned(),
        }),
    }
}

pub(super) fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let entries = match dotenvy::from_path_iter(path) {
        Ok(entries) => entries,
        Err(error) if error.not_found() => return Ok(HashMap::new()),
        Err(error) => {
            return Err(ConfigError::DotEnv {
                path: path.to_owned(),
                message: error.to_string(),
            });
        }
    };
    entries
        .map(|entry| {
            entry.map_err(|error| ConfigError::DotEnv {
                path: path.to_owned(),
                // dotenvy quotes the offending line, which may hold a password: keep only its kind.
                message: match error {
                    dotenvy::Error::LineParse(_, index) => {
                        format!("syntax error at character {index}")
                    }
                    other => other.to_string(),
                },
            })
        })
        .collect()
}
