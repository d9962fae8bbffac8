//! `/users`: the guide's user endpoints, plus list, batch, update and delete.
//!
//! A single-row write is one statement that commits by itself before the answer, or fails and
//! leaves nothing (the guide's `get_db` in one round trip); a batch runs in a [`UnitOfWork`]:
//! committed when the handler succeeds, rolled back when it fails. Reads and single statements
//! go through [`crate::database::Database::run`], which retries once on a live connection when
//! a pooled one turns out dead. SQL is written inline, with bound parameters.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Datelike as _, NaiveDate, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ApiJson, ApiQuery, FieldError, JsonShape, object_at};
use crate::database::{DatabaseError, UnitOfWork};

/// Rows one `POST /users/batch` may create.
pub const BATCH_LIMIT: usize = 1000;
const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 100;

pub fn router() -> Router<ApiContext> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/batch", post(create_batch))
        .route(
            "/users/{user_id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
}

/// A user as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    /// Assigned by the database.
    pub id: i64,
    /// Unique; letters, digits, `.`, `_` and `-`.
    pub username: String,
    /// Unique regardless of case.
    pub email: String,
    /// When the row was inserted.
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// 3 to 50 characters, unique; no control or formatting characters (zero-width, bidi),
    /// no leading or trailing whitespace.
    #[schema(min_length = 3, max_length = 50)]
    pub username: String,
    /// An e-mail address, unique whatever its case.
    #[schema(max_length = 254)]
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UserPatch {
    #[schema(min_length = 3, max_length = 50)]
    pub username: Option<String>,
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPage {
    pub items: Vec<User>,
    /// Matching users in all pages.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchCreated {
    pub created: usize,
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// 0 or more.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Part of a username or e-mail address, any case; no NUL.
    #[param(pattern = "^[^\\x00]*$")]
    q: Option<String>,
    /// Only users created after this instant (RFC 3339) or day (YYYY-MM-DD), years 0001 to 9999.
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// The order: a column, ascending, or `-` and a column, descending (default `id`).
    #[serde(default)]
    #[param(inline)]
    sort: SortOrder,
}

/// The orders a listing can have; each ends on the id, so pages never overlap.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
pub enum SortOrder {
    #[default]
    #[serde(rename = "id")]
    IdAscending,
    #[serde(rename = "-id")]
    IdDescending,
    #[serde(rename = "username")]
    UsernameAscending,
    #[serde(rename = "-username")]
    UsernameDescending,
    #[serde(rename = "email")]
    EmailAscending,
    #[serde(rename = "-email")]
    EmailDescending,
    #[serde(rename = "created_at")]
    CreatedAscending,
    #[serde(rename = "-created_at")]
    CreatedDescending,
}

impl SortOrder {
    fn order_by(self) -> &'static str {
        match self {
            Self::IdAscending => "id",
            Self::IdDescending => "id DESC",
            Self::UsernameAscending => "username, id",
            Self::UsernameDescending => "username DESC, id DESC",
            Self::EmailAscending => "email, id",
            Self::EmailDescending => "email DESC, id DESC",
            Self::CreatedAscending => "created_at, id",
            Self::CreatedDescending => "created_at DESC, id DESC",
        }
    }
}

impl JsonShape for NewUser {
    fn misshapen(value: &Value, location: &[Value]) -> Option<FieldError> {
        object_at(value, location)
    }
}

impl JsonShape for UserPatch {
    fn misshapen(value: &Value, location: &[Value]) -> Option<FieldError> {
        object_at(value, location)
    }
}

/// The `{user_id}` path segment: an integer, or 422.
pub struct UserId(i64);

impl<S: Send + Sync> FromRequestParts<S> for UserId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        raw.parse().map(Self).map_err(|_| {
            ApiError::fields(vec![FieldError::new(
                &[json!("path"), json!("user_id")],
                format!("user_id must be an integer, got {raw:?}"),
                "type_error.integer",
            )])
        })
    }
}

const SELECT_USER_BY_ID: &str = "SELECT id, username, email, created_at FROM users WHERE id = $1";
/// What makes two e-mail addresses one: the expression of the `users_email_key` index.
const EMAIL_KEY: &str = r#"lower(email COLLATE "und-x-icu")"#;
/// What makes two usernames one: the expression of the `users_username_key` index.
const USERNAME_KEY: &str = r#"lower(normalize(username, NFKC) COLLATE "und-x-icu")"#;
/// The users `GET /users` lists: `$1` a search pattern, `$2` a creation-time bound.
const MATCHING_USERS: &str = "FROM users
          WHERE ($1::text IS NULL OR username ILIKE $1 OR email ILIKE $1)
            AND ($2::timestamptz IS NULL OR created_at > $2)";

fn validate(user: &NewUser, location: &[Value]) -> Vec<FieldError> {
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

fn at(location: &[Value], field: &str) -> Vec<Value> {
    let mut path = location.to_vec();
    path.push(json!(field));
    path
}

fn username_error(username: &str) -> Option<String> {
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

fn email_error(email: &str) -> Option<String> {
    let valid = email.chars().count() <= 254 && EMAIL.is_match(email);
    (!valid).then(|| format!("email must be an address like name@example.com, got {email:?}"))
}

/// Code points a username or an e-mail address must not hold (inclusive ranges): Unicode's
/// control (Cc: NUL, which PostgreSQL refuses in text, among them), format (Cf: zero-width,
/// bidi overrides), line and paragraph separator categories, the Default_Ignorable_Code_Point
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
/// Unicode's White_Space: what a username must not start or end with.
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
fn class_of(ranges: &[(u32, u32)]) -> String {
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

/// The unique columns of `users`: the constraint behind each, and how a clash is reported.
#[derive(Debug, Clone, Copy)]
enum Unique {
    Username,
    Email,
}

impl Unique {
    fn of_constraint(name: &str) -> Option<Self> {
        match name {
            "users_username_key" => Some(Self::Username),
            "users_email_key" => Some(Self::Email),
            _ => None,
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Username => "username",
            Self::Email => "email",
        }
    }

    /// The value at `location` belongs to another user already.
    fn taken(self, location: &[Value]) -> FieldError {
        let message = match self {
            Self::Username => "username is already taken",
            Self::Email => "email is already registered",
        };
        FieldError::new(&at(location, self.field()), message, "unique_violation")
    }

    /// The value at `location` repeats row `first` of the same batch.
    fn repeated(self, location: &[Value], first: usize) -> FieldError {
        FieldError::new(
            &at(location, self.field()),
            format!("{} repeats row {first} of this batch", self.field()),
            "unique_violation",
        )
    }
}

/// A unique violation as a 409 naming the field; anything else as a 500.
fn conflict_or_internal(error: sqlx::Error, location: &[Value]) -> ApiError {
    let unique = match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            database.constraint().and_then(Unique::of_constraint)
        }
        _ => None,
    };
    match unique {
        Some(unique) => ApiError::Conflict(vec![unique.taken(location)]),
        None => ApiError::from(error),
    }
}

/// A single statement's failure: a taken unique value as 409, the rest as the pool's errors.
fn statement_error(error: DatabaseError, location: &[Value]) -> ApiError {
    match error {
        DatabaseError::Query(error) => conflict_or_internal(error, location),
        other => other.into(),
    }
}

fn parse_created_after(text: &str) -> Result<DateTime<Utc>, ApiError> {
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
fn search_pattern(q: Option<String>) -> Result<Option<String>, ApiError> {
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
fn page_of(query: &ListQuery) -> Result<(i64, i64), ApiError> {
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

/// List users (by id unless sorted otherwise): paginated, searchable, filterable by creation
/// time, sortable by any column.
#[utoipa::path(get, path = "/users", tag = "users", params(ListQuery), responses(
    (status = 200, description = "A page of users", body = UserPage),
    (status = 422, description = "A query parameter is invalid", body = Object),
))]
pub async fn list_users(
    State(context): State<ApiContext>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>, ApiError> {
    let (limit, offset) = page_of(&query)?;
    let created_after = query
        .created_after
        .as_deref()
        .map(parse_created_after)
        .transpose()?;
    let pattern = search_pattern(query.q)?;
    let (rows, total) = context
        .database
        .run(async |connection| {
            let rows: Vec<(i64, String, String, DateTime<Utc>, i64)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT id, username, email, created_at, count(*) OVER () AS total
                       {MATCHING_USERS}
                      ORDER BY {}
                      LIMIT $3 OFFSET $4",
                    query.sort.order_by()
                )))
                .bind(&pattern)
                .bind(created_after)
                .bind(limit)
                .bind(offset)
                .fetch_all(&mut *connection)
                .await?;
            let total = match rows.first() {
                Some(row) => row.4,
                // Past the last page the window count is not there: count the same filter apart.
                None if offset > 0 => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT count(*) {MATCHING_USERS}"
                    )))
                    .bind(&pattern)
                    .bind(created_after)
                    .fetch_one(&mut *connection)
                    .await?
                }
                None => 0,
            };
            Ok((rows, total))
        })
        .await?;
    Ok(Json(UserPage {
        items: rows
            .into_iter()
            .map(|(id, username, email, created_at, _)| User {
                id,
                username,
                email,
                created_at,
            })
            .collect(),
        total,
        limit,
        offset,
    }))
}

/// The guide's `GET /users/{user_id}`.
#[utoipa::path(get, path = "/users/{user_id}", tag = "users",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "`{\"detail\": \"User not found\"}`"),
        (status = 422, description = "user_id is not an integer"),
    ))]
pub async fn get_user(
    State(context): State<ApiContext>,
    UserId(id): UserId,
) -> Result<Json<User>, ApiError> {
    context
        .database
        .run(async |connection| {
            sqlx::query_as(SELECT_USER_BY_ID)
                .bind(id)
                .fetch_optional(connection)
                .await
        })
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("User not found"))
}

fn created(user: User) -> Response {
    let location = format!("/users/{}", user.id);
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(user),
    )
        .into_response()
}

/// Create a user: 201 with `Location`.
#[utoipa::path(post, path = "/users", tag = "users", request_body = NewUser, responses(
    (status = 201, description = "Created", body = User),
    (status = 400, description = "Malformed JSON"),
    (status = 409, description = "The username or e-mail address is taken (named)"),
    (status = 413, description = "Body too large"),
    (status = 415, description = "Not application/json"),
    (status = 422, description = "Invalid fields (each named)"),
))]
pub async fn create_user(
    State(context): State<ApiContext>,
    ApiJson(user): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let errors = validate(&user, &[json!("body")]);
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    // One statement, committed by itself before the 201: the unit of work in one round trip.
    context
        .database
        .run(async |connection| {
            sqlx::query_as(
                "INSERT INTO users (username, email) VALUES ($1, $2)
                 RETURNING id, username, email, created_at",
            )
            .bind(&user.username)
            .bind(&user.email)
            .fetch_one(connection)
            .await
        })
        .await
        .map(created)
        .map_err(|error| statement_error(error, &[json!("body")]))
}

/// Create many users at once: all or nothing, in one statement.
#[utoipa::path(post, path = "/users/batch", tag = "users", request_body = Vec<NewUser>, responses(
    (status = 201, description = "All created", body = BatchCreated),
    (status = 409, description = "Rows whose username or e-mail is taken, or repeated in the batch (by index); nothing created"),
    (status = 422, description = "Invalid rows (by index), or more than 1000; nothing created"),
))]
pub async fn create_batch(
    State(context): State<ApiContext>,
    ApiJson(users): ApiJson<Vec<NewUser>>,
) -> Result<Response, ApiError> {
    validate_batch(&users)?;
    let mut unit = context.database.begin().await?;
    let result = insert_batch(&mut unit, &users).await;
    unit.finish(result).await
}

fn validate_batch(users: &[NewUser]) -> Result<(), ApiError> {
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
        .flat_map(|(index, user)| validate(user, &[json!("body"), json!(index)]))
        .collect();
    if invalid.is_empty() {
        Ok(())
    } else {
        Err(ApiError::fields(invalid))
    }
}

/// Each row whose username or e-mail key is taken already, or repeats an earlier row's.
fn batch_conflicts(
    usernames: &[String],
    emails: &[String],
    taken_usernames: &[String],
    taken_emails: &[String],
) -> Vec<FieldError> {
    let mut conflicts = Vec::new();
    let mut first_username: HashMap<&str, usize> = HashMap::new();
    let mut first_email: HashMap<&str, usize> = HashMap::new();
    for (index, (username, email)) in usernames.iter().zip(emails).enumerate() {
        let location = [json!("body"), json!(index)];
        if taken_usernames.iter().any(|taken| taken == username) {
            conflicts.push(Unique::Username.taken(&location));
        } else if let Some(first) = first_username.insert(username.as_str(), index) {
            conflicts.push(Unique::Username.repeated(&location, first));
        }
        if taken_emails.iter().any(|taken| taken == email) {
            conflicts.push(Unique::Email.taken(&location));
        } else if let Some(first) = first_email.insert(email.as_str(), index) {
            conflicts.push(Unique::Email.repeated(&location, first));
        }
    }
    conflicts
}

async fn insert_batch(unit: &mut UnitOfWork, users: &[NewUser]) -> Result<Response, ApiError> {
    let usernames: Vec<&str> = users.iter().map(|user| user.username.as_str()).collect();
    let emails: Vec<&str> = users.iter().map(|user| user.email.as_str()).collect();
    // Keyed by the database, as its unique indexes are, so that a batch and single writes
    // follow one rule.
    let keys: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {USERNAME_KEY}, {EMAIL_KEY}
           FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS batch(username, email, row)
          ORDER BY row"
    )))
    .bind(&usernames)
    .bind(&emails)
    .fetch_all(unit.connection())
    .await?;
    let (username_keys, email_keys): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    let taken: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {USERNAME_KEY}, NULL::text FROM users WHERE {USERNAME_KEY} = ANY($1)
         UNION ALL
         SELECT NULL, {EMAIL_KEY} FROM users WHERE {EMAIL_KEY} = ANY($2)"
        )))
        .bind(&username_keys)
        .bind(&email_keys)
        .fetch_all(unit.connection())
        .await
        .map_err(ApiError::from)?;
    let taken_usernames: Vec<String> = taken.iter().filter_map(|(name, _)| name.clone()).collect();
    let taken_emails: Vec<String> = taken.into_iter().filter_map(|(_, email)| email).collect();
    let conflicts = batch_conflicts(&username_keys, &email_keys, &taken_usernames, &taken_emails);
    if !conflicts.is_empty() {
        return Err(ApiError::Conflict(conflicts));
    }

    let mut created: Vec<User> = sqlx::query_as(
        "INSERT INTO users (username, email)
         SELECT * FROM UNNEST($1::text[], $2::text[])
         RETURNING id, username, email, created_at",
    )
    .bind(&usernames)
    .bind(&emails)
    .fetch_all(unit.connection())
    .await
    .map_err(|error| conflict_or_internal(error, &[json!("body")]))?;
    created.sort_by_key(|user| user.id);
    Ok((
        StatusCode::CREATED,
        Json(BatchCreated {
            created: created.len(),
            users: created,
        }),
    )
        .into_response())
}

/// Change a user's username and/or e-mail address.
#[utoipa::path(patch, path = "/users/{user_id}", tag = "users", request_body = UserPatch,
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 200, description = "Updated", body = User),
        (status = 404, description = "`{\"detail\": \"User not found\"}`"),
        (status = 409, description = "The new username or e-mail address is taken"),
        (status = 422, description = "Invalid fields, or user_id not an integer"),
    ))]
pub async fn update_user(
    State(context): State<ApiContext>,
    UserId(id): UserId,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<User>, ApiError> {
    let location = [json!("body")];
    let mut errors = Vec::new();
    if let Some(error) = patch.username.as_deref().and_then(username_error) {
        errors.push(FieldError::new(
            &at(&location, "username"),
            error,
            "value_error",
        ));
    }
    if let Some(error) = patch.email.as_deref().and_then(email_error) {
        errors.push(FieldError::new(
            &at(&location, "email"),
            error,
            "value_error",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    context
        .database
        .run(async |connection| {
            sqlx::query_as(
                "UPDATE users SET username = coalesce($2, username), email = coalesce($3, email)
                  WHERE id = $1
              RETURNING id, username, email, created_at",
            )
            .bind(id)
            .bind(&patch.username)
            .bind(&patch.email)
            .fetch_optional(connection)
            .await
        })
        .await
        .map_err(|error| statement_error(error, &location))?
        .map(Json)
        .ok_or(ApiError::NotFound("User not found"))
}

/// Delete a user: 204, or 404.
#[utoipa::path(delete, path = "/users/{user_id}", tag = "users",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`{\"detail\": \"User not found\"}`"),
        (status = 422, description = "user_id is not an integer"),
    ))]
pub async fn delete_user(
    State(context): State<ApiContext>,
    UserId(id): UserId,
) -> Result<StatusCode, ApiError> {
    let done = context
        .database
        .run(async |connection| {
            sqlx::query("DELETE FROM users WHERE id = $1")
                .bind(id)
                .execute(connection)
                .await
        })
        .await?;
    if done.rows_affected() == 0 {
        Err(ApiError::NotFound("User not found"))
    } else {
        Ok(StatusCode::NO_CONTENT)
    }
}
