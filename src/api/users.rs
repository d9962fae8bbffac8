//! `/users`: the guide's user endpoints, plus list, batch, update and delete.
//!
//! Writes run in the request's [`UnitOfWork`] (the guide's `get_db`): committed when the
//! handler succeeds, rolled back when it fails. SQL is written inline, with bound parameters.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiContext;
use super::error::{ApiError, ApiJson, ApiQuery, FieldError};
use crate::database::UnitOfWork;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewUser {
    /// 3 to 50 characters, unique.
    pub username: String,
    /// An e-mail address, unique whatever its case.
    pub email: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct UserPatch {
    pub username: Option<String>,
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
pub struct ListQuery {
    /// 1 to 100 (default 50).
    limit: Option<i64>,
    /// 0 or more.
    offset: Option<i64>,
    /// Part of a username or e-mail address, any case.
    q: Option<String>,
    /// Only users created after this instant (RFC 3339) or day (YYYY-MM-DD).
    created_after: Option<String>,
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

impl FromRequestParts<ApiContext> for UnitOfWork {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        context: &ApiContext,
    ) -> Result<Self, Self::Rejection> {
        Ok(context.database.begin().await?)
    }
}

const SELECT_USER: &str = "SELECT id, username, email, created_at FROM users";

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
    (!(3..=50).contains(&length))
        .then(|| format!("username must be 3 to 50 characters, got {length}"))
}

fn email_error(email: &str) -> Option<String> {
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !domain.is_empty() && !domain.contains('@')
        });
    (!valid).then(|| format!("email must be an address like name@example.com, got {email:?}"))
}

/// A unique violation as a 409 naming the field; anything else as a 500.
fn conflict_or_internal(error: sqlx::Error, location: &[Value]) -> ApiError {
    let constraint = match &error {
        sqlx::Error::Database(database) if database.is_unique_violation() => {
            database.constraint().map(str::to_owned)
        }
        _ => None,
    };
    match constraint.as_deref() {
        Some("users_username_key") => ApiError::Conflict(json!([FieldError::new(
            &at(location, "username"),
            "username is already taken",
            "unique_violation",
        )])),
        Some("users_email_key") => ApiError::Conflict(json!([FieldError::new(
            &at(location, "email"),
            "email is already registered",
            "unique_violation",
        )])),
        _ => ApiError::from(error),
    }
}

fn parse_created_after(text: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|day| day.and_time(chrono::NaiveTime::MIN).and_utc())
        })
        .map_err(|_| {
            ApiError::fields(vec![FieldError::new(
                &[json!("query"), json!("created_after")],
                format!(
                    "created_after must be a date (2025-01-01) or an RFC 3339 instant, got {text:?}"
                ),
                "value_error.datetime",
            )])
        })
}

/// List users, newest id last: paginated, searchable, filterable by creation time.
#[utoipa::path(get, path = "/users", tag = "users", params(ListQuery), responses(
    (status = 200, description = "A page of users", body = UserPage),
    (status = 422, description = "A query parameter is invalid", body = Object),
))]
pub async fn list_users(
    State(context): State<ApiContext>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>, ApiError> {
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
    if !errors.is_empty() {
        return Err(ApiError::fields(errors));
    }
    let created_after = query
        .created_after
        .as_deref()
        .map(parse_created_after)
        .transpose()?;
    // The search text is a pattern for ILIKE: its own wildcards are matched literally.
    let pattern = query.q.filter(|q| !q.is_empty()).map(|q| {
        format!(
            "%{}%",
            q.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let mut connection = context.database.acquire().await?;
    let rows: Vec<(i64, String, String, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT id, username, email, created_at, count(*) OVER () AS total
           FROM users
          WHERE ($1::text IS NULL OR username ILIKE $1 OR email ILIKE $1)
            AND ($2::timestamptz IS NULL OR created_at > $2)
          ORDER BY id
          LIMIT $3 OFFSET $4",
    )
    .bind(pattern)
    .bind(created_after)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *connection)
    .await?;
    let total = match rows.first() {
        Some(row) => row.4,
        // Past the last page the window count is not there: count separately.
        None if offset > 0 => {
            sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(&mut *connection)
                .await?
        }
        None => 0,
    };
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
    let mut connection = context.database.acquire().await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{SELECT_USER} WHERE id = $1")))
        .bind(id)
        .fetch_optional(&mut *connection)
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
    mut unit: UnitOfWork,
    ApiJson(user): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    let errors = validate(&user, &[json!("body")]);
    if !errors.is_empty() {
        return unit.finish(Err(ApiError::fields(errors))).await;
    }
    let result = sqlx::query_as(
        "INSERT INTO users (username, email) VALUES ($1, $2)
         RETURNING id, username, email, created_at",
    )
    .bind(&user.username)
    .bind(&user.email)
    .fetch_one(unit.connection())
    .await
    .map(created)
    .map_err(|error| conflict_or_internal(error, &[json!("body")]));
    unit.finish(result).await
}

/// Create many users at once: all or nothing, in one statement.
#[utoipa::path(post, path = "/users/batch", tag = "users", request_body = Vec<NewUser>, responses(
    (status = 201, description = "All created", body = BatchCreated),
    (status = 409, description = "Rows whose username or e-mail is taken, or repeated in the batch (by index); nothing created"),
    (status = 422, description = "Invalid rows (by index), or more than 1000; nothing created"),
))]
pub async fn create_batch(
    mut unit: UnitOfWork,
    ApiJson(users): ApiJson<Vec<NewUser>>,
) -> Result<Response, ApiError> {
    let result = insert_batch(&mut unit, &users).await;
    unit.finish(result).await
}

async fn insert_batch(unit: &mut UnitOfWork, users: &[NewUser]) -> Result<Response, ApiError> {
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
    if !invalid.is_empty() {
        return Err(ApiError::fields(invalid));
    }

    let usernames: Vec<&str> = users.iter().map(|user| user.username.as_str()).collect();
    let emails: Vec<String> = users.iter().map(|user| user.email.to_lowercase()).collect();
    let taken: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT username, NULL::text FROM users WHERE username = ANY($1)
         UNION ALL
         SELECT NULL, lower(email) FROM users WHERE lower(email) = ANY($2)",
    )
    .bind(&usernames)
    .bind(&emails)
    .fetch_all(unit.connection())
    .await
    .map_err(ApiError::from)?;
    let taken_usernames: Vec<String> = taken.iter().filter_map(|(name, _)| name.clone()).collect();
    let taken_emails: Vec<String> = taken.into_iter().filter_map(|(_, email)| email).collect();

    let mut conflicts = Vec::new();
    let mut first_username: HashMap<&str, usize> = HashMap::new();
    let mut first_email: HashMap<&str, usize> = HashMap::new();
    for (index, (username, email)) in usernames.iter().zip(&emails).enumerate() {
        let location = [json!("body"), json!(index)];
        if taken_usernames.iter().any(|taken| taken == username) {
            conflicts.push(FieldError::new(
                &at(&location, "username"),
                "username is already taken",
                "unique_violation",
            ));
        } else if let Some(first) = first_username.insert(username, index) {
            conflicts.push(FieldError::new(
                &at(&location, "username"),
                format!("username repeats row {first} of this batch"),
                "unique_violation",
            ));
        }
        if taken_emails.iter().any(|taken| taken == email) {
            conflicts.push(FieldError::new(
                &at(&location, "email"),
                "email is already registered",
                "unique_violation",
            ));
        } else if let Some(first) = first_email.insert(email, index) {
            conflicts.push(FieldError::new(
                &at(&location, "email"),
                format!("email repeats row {first} of this batch"),
                "unique_violation",
            ));
        }
    }
    if !conflicts.is_empty() {
        return Err(ApiError::Conflict(json!(conflicts)));
    }

    let originals: Vec<&str> = users.iter().map(|user| user.email.as_str()).collect();
    let mut created: Vec<User> = sqlx::query_as(
        "INSERT INTO users (username, email)
         SELECT * FROM UNNEST($1::text[], $2::text[])
         RETURNING id, username, email, created_at",
    )
    .bind(&usernames)
    .bind(&originals)
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
    mut unit: UnitOfWork,
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
    let result = if errors.is_empty() {
        sqlx::query_as(
            "UPDATE users SET username = coalesce($2, username), email = coalesce($3, email)
              WHERE id = $1
          RETURNING id, username, email, created_at",
        )
        .bind(id)
        .bind(&patch.username)
        .bind(&patch.email)
        .fetch_optional(unit.connection())
        .await
        .map_err(|error| conflict_or_internal(error, &location))
        .and_then(|user| user.map(Json).ok_or(ApiError::NotFound("User not found")))
    } else {
        Err(ApiError::fields(errors))
    };
    unit.finish(result).await
}

/// Delete a user: 204, or 404.
#[utoipa::path(delete, path = "/users/{user_id}", tag = "users",
    params(("user_id" = i64, Path, description = "The user's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`{\"detail\": \"User not found\"}`"),
        (status = 422, description = "user_id is not an integer"),
    ))]
pub async fn delete_user(mut unit: UnitOfWork, UserId(id): UserId) -> Result<StatusCode, ApiError> {
    let result = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(unit.connection())
        .await
        .map_err(ApiError::from)
        .and_then(|done| {
            if done.rows_affected() == 0 {
                Err(ApiError::NotFound("User not found"))
            } else {
                Ok(StatusCode::NO_CONTENT)
            }
        });
    unit.finish(result).await
}
