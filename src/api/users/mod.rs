//! `/users`: the guide's user endpoints, plus list, batch, update and delete.
//!
//! A single-row write is one statement that commits by itself before the answer, or fails and
//! leaves nothing (the guide's `get_db` in one round trip); a batch runs in a
//! [`UnitOfWork`](crate::database::UnitOfWork):
//! committed when the handler succeeds, rolled back when it fails. Reads and single statements
//! go through [`crate::database::Database::run`], which retries once on a live connection when
//! a pooled one turns out dead. SQL is written inline, with bound parameters.

use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod store;
mod validate;

use self::store::{MATCHING_USERS, SELECT_USER_BY_ID, insert_batch, statement_error};
pub use self::validate::{EMAIL_PATTERN, USERNAME_PATTERN};
use self::validate::{
    at, email_error, field_errors, page_of, parse_created_after, search_pattern, username_error,
    validate_batch,
};
use super::ApiContext;
use super::error::{ApiError, ApiJson, ApiQuery, FieldError, JsonShape, object_at};

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
    let errors = field_errors(&user, &[json!("body")]);
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
