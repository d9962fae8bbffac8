//! What a user and a listing may be: field rules (usernames and e-mail addresses, in one form
//! the server, the `OpenAPI` document and JavaScript read alike), batch limits, and the listing's
//! query parameters.

use std::sync::LazyLock;

use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use regex::Regex;
use serde_json::{Value, json};

use super::{BATCH_LIMIT, DEFAULT_PAGE, ListQuery, MAX_PAGE, NewUser};
use crate::api::error::{ApiError, FieldError};

pub(super) fn field_errors(user: &NewUser, location: &[Value]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(error) = username_error(&user.username) {
        errors.push(FieldError::new(
            &at(location, "username"),
            error,
            "value_error",
        ));
    }
    if let Some(error) = email_error(&user.email) {
        errors.push(FieldError::new(
            &at(location, "email"),
            error,
            "value_error",
        ));
    }
    errors
}

pub(super) fn at(location: &[Value], field: &str) -> Vec<Value> {
    let mut path = location.to_vec();
    path.push(json!(field));
    path
}

pub(super) fn username_error(username: &str) -> Option<String> {
    let length = username.chars().count();
    if !(3..=50).contains(&length) {
        return Some(format!("username must be 3 to 50 characters, got {length}"));
    }
    (!USERNAME.is_match(username)).then(|| {
        "username must not contain control, formatting or blank characters (zero-width, bidi \
         controls, NUL, fillers, variation selectors), nor start or end with whitespace"
            .to_owned()
    })
}

pub(super) fn email_error(email: &str) -> Option<String> {
    let valid = email.chars().count() <= 254 && EMAIL.is_match(email);
    (!valid).then(|| format!("email must be an address like name@example.com, got {email:?}"))
}

/// Code points a username or an e-mail address must not hold (inclusive ranges): Unicode's
/// control (Cc: NUL, which `PostgreSQL` refuses in text, among them), format (Cf: zero-width,
/// bidi overrides), line and paragraph separator categories, the `Default_Ignorable_Code_Point`
/// property (Hangul fillers, variation selectors, the combining grapheme joiner) and U+2800
/// (a blank Braille pattern): what renders as nothing or as blank space. The patterns below
/// are built from it; a test checks it against the Unicode tables.
const INVISIBLE: &[(u32, u32)] = &[
    (0x0000, 0x001F),
    (0x007F, 0x009F),
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x206F),
    (0x2800, 0x2800),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];
/// Unicode's `White_Space`: what a username must not start or end with.
const WHITESPACE: &[(u32, u32)] = &[
    (0x0009, 0x000D),
    (0x0020, 0x0020),
    (0x0085, 0x0085),
    (0x00A0, 0x00A0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
];

/// `ranges` as the inside of a regular-expression class that Rust's `regex`, JavaScript's with
/// the `u` flag and Python's `re` read alike: `\uXXXX` escapes for the Basic Multilingual Plane
/// and the characters themselves above it, where the three share no escape.
pub(super) fn class_of(ranges: &[(u32, u32)]) -> String {
    let one = |code: u32| match char::from_u32(code) {
        Some(character) if code > 0xFFFF => character.to_string(),
        _ => format!("\\u{code:04X}"),
    };
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                one(first)
            } else {
                format!("{}-{}", one(first), one(last))
            }
        })
        .collect()
}

/// A username: 3 to 50 characters, none invisible, not starting or ending with whitespace.
pub static USERNAME_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let (invisible, space) = (class_of(INVISIBLE), class_of(WHITESPACE));
    format!("^[^{space}{invisible}][^{invisible}]{{1,48}}[^{space}{invisible}]$")
});
/// An e-mail address: one `@` between two non-empty parts, no whitespace, nothing invisible.
pub static EMAIL_PATTERN: LazyLock<String> = LazyLock::new(|| {
    let (invisible, space) = (class_of(INVISIBLE), class_of(WHITESPACE));
    format!("^[^{space}@{invisible}]+@[^{space}@{invisible}]+$")
});
#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by every test run"
)]
static USERNAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&USERNAME_PATTERN).expect("the username pattern compiles"));
#[expect(
    clippy::expect_used,
    reason = "a constant pattern, compiled by every test run"
)]
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&EMAIL_PATTERN).expect("the e-mail pattern compiles"));

pub(super) fn parse_created_after(text: &str) -> Result<DateTime<Utc>, ApiError> {
    let invalid = |message: String| {
        ApiError::fields(vec![FieldError::new(
            &[json!("query"), json!("created_after")],
            message,
            "value_error.datetime",
        )])
    };
    let instant = DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            invalid(format!(
                "created_after must be a date (2025-01-01) or an RFC 3339 instant, got {text:?}"
            ))
        })?;
    // Four-digit years, as RFC 3339 has them; PostgreSQL would refuse some years outside.
    if !(1..=9999).contains(&instant.year()) {
        return Err(invalid(format!(
            "created_after must be between 0001-01-01 and 9999-12-31, got {text:?}"
        )));
    }
    Ok(instant)
}

/// The `q` search text as an ILIKE pattern whose own wildcards match literally.
pub(super) fn search_pattern(q: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(q) = q.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    if q.contains('\0') {
        return Err(ApiError::fields(vec![FieldError::new(
            &[json!("query"), json!("q")],
            "q must not contain NUL characters",
            "value_error",
        )]));
    }
    let escaped = q
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    Ok(Some(format!("%{escaped}%")))
}

/// The page a listing asks for: `limit` (1 to the maximum, default one page) and `offset`.
pub(super) fn page_of(query: &ListQuery) -> Result<(i64, i64), ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    let offset = query.offset.unwrap_or(0);
    let mut errors = Vec::new();
    if !(1..=MAX_PAGE).contains(&limit) {
        errors.push(FieldError::new(
            &[json!("query"), json!("limit")],
            format!("limit must be 1 to {MAX_PAGE}"),
            "value_error",
        ));
    }
    if offset < 0 {
        errors.push(FieldError::new(
            &[json!("query"), json!("offset")],
            "offset must be 0 or more",
            "value_error",
        ));
    }
    if errors.is_empty() {
        Ok((limit, offset))
    } else {
        Err(ApiError::fields(errors))
    }
}

pub(super) fn validate_batch(users: &[NewUser]) -> Result<(), ApiError> {
    if users.is_empty() || users.len() > BATCH_LIMIT {
        return Err(ApiError::fields(vec![FieldError::new(
            &[json!("body")],
            format!(
                "a batch holds 1 to {BATCH_LIMIT} users, got {}",
                users.len()
            ),
            "value_error",
        )]));
    }
    let invalid: Vec<FieldError> = users
        .iter()
        .enumerate()
        .flat_map(|(index, user)| field_errors(user, &[json!("body"), json!(index)]))
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(invalid))
    }
}
