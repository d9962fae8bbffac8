//! The users table's SQL: the unique keys and the constraints behind them, a taken value as a
//! 409 naming the field (one helper for every write), and the batch insert.

use std::collections::HashMap;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::validate::at;
use super::{BatchCreated, NewUser, User};
use crate::api::error::{ApiError, FieldError};
use crate::database::{DatabaseError, UnitOfWork};

pub(super) const SELECT_USER_BY_ID: &str =
    "SELECT id, username, email, created_at FROM users WHERE id = $1";
/// What makes two e-mail addresses one: the expression of the `users_email_key` index.
pub(super) const EMAIL_KEY: &str = r#"lower(email COLLATE "und-x-icu")"#;
/// What makes two usernames one: the expression of the `users_username_key` index.
pub(super) const USERNAME_KEY: &str = r#"lower(normalize(username, NFKC) COLLATE "und-x-icu")"#;
/// The users `GET /users` lists: `$1` a search pattern, `$2` a creation-time bound.
pub(super) const MATCHING_USERS: &str = "FROM users
          WHERE ($1::text IS NULL OR username ILIKE $1 OR email ILIKE $1)
            AND ($2::timestamptz IS NULL OR created_at > $2)";

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
pub(super) fn conflict_or_internal(error: sqlx::Error, location: &[Value]) -> ApiError {
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
pub(super) fn statement_error(error: DatabaseError, location: &[Value]) -> ApiError {
    match error {
        DatabaseError::Query(error) => conflict_or_internal(error, location),
        other => other.into(),
    }
}

/// Each row whose username or e-mail key is taken already, or repeats an earlier row's.
pub(super) fn batch_conflicts(
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

pub(super) async fn insert_batch(
    unit: &mut UnitOfWork,
    users: &[NewUser],
) -> Result<Response, ApiError> {
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
