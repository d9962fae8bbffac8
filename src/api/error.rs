//! One error type for every route. Bodies are always `{"detail": ...}`, as in the guide's
//! service; a 5xx detail is logged, never sent.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Write as _;
use tracing::error;

use crate::database::{DatabaseError, is_connection_lost};

/// One invalid field (`FastAPI`'s validation error item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: e.g. `["body", "email"]`, `["path", "user_id"]`, `["body", 2, "username"]`.
    /// (Names and indexes: any JSON value per item.)
    #[schema(value_type = Vec<Value>)]
    pub loc: Vec<serde_json::Value>,
    /// What is wrong with it, for people.
    pub msg: String,
    /// A machine-readable code (e.g. `missing`, `value_error`).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    /// An error at `loc` (e.g. `["body", "email"]`) with its message and code.
    #[must_use]
    pub fn new(loc: &[serde_json::Value], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.to_vec(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

/// Every error's body: `{"detail": "message"}`, or `{"detail": [FieldError, ...]}` for 409
/// and 422 (`FastAPI`'s shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub detail: ErrorDetail,
}

/// A message, or the invalid fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ErrorDetail {
    Message(String),
    Fields(Vec<FieldError>),
}

/// Every error the API answers with; each variant documents its status. The body is always `{"detail": …}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON.
    #[error("{0}")]
    BadRequest(String),
    /// 401 with `WWW-Authenticate: Bearer`: an admin route without the admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: not allowed in this mode (database control against an external server, admin
    /// routes beyond loopback without a token) or from another site.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 408: the request body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 409: a unique value is taken; `detail` says which.
    #[error("conflict")]
    Conflict(Vec<FieldError>),
    /// 409: the server's state does not allow it (e.g. `pg_stat_statements` not installed).
    #[error("{0}")]
    StateConflict(String),
    /// 413: the body is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 421: the `Host` header names a server this is not (DNS rebinding).
    #[error("{0}")]
    MisdirectedRequest(String),
    /// 422: invalid fields, each named.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 503 with `Retry-After`: the database is down or every connection is busy.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After`: a write failed because the disk holding the database's data
    /// directory is full (SQLSTATE 53100); reads still work. `/health` reports it as degraded.
    #[error(
        "the disk holding the database's data directory is full: free space on it and try \
         again (reads still work)"
    )]
    DiskFull,
    /// 500: logged in full with its causes, sent as a bare message.
    #[error("{0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 500 for `error`, kept whole for the log.
    #[must_use]
    pub fn internal(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(error))
    }

    /// A 422 listing each invalid field.
    #[must_use]
    pub fn fields(errors: Vec<FieldError>) -> Self {
        Self::Validation(errors)
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) | Self::StateConflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::MisdirectedRequest(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) | Self::DiskFull => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let extra_header = match &self {
            Self::Unavailable(_) | Self::DiskFull => {
                Some((header::RETRY_AFTER, RETRY_AFTER_SECONDS))
            }
            Self::Unauthorized(_) => Some((header::WWW_AUTHENTICATE, "Bearer")),
            _ => None,
        };
        let disk_full = matches!(self, Self::DiskFull);
        let detail = match self {
            Self::Conflict(fields) | Self::Validation(fields) => ErrorDetail::Fields(fields),
            Self::Internal(source) => {
                let mut message = source.to_string();
                let mut cause = source.source();
                while let Some(inner) = cause {
                    let _ = write!(message, ": {inner}");
                    cause = inner.source();
                }
                error!(%message, "internal error");
                ErrorDetail::Message("Internal server error".to_owned())
            }
            other => ErrorDetail::Message(other.to_string()),
        };
        let mut response = (status, axum::Json(ErrorBody { detail })).into_response();
        if let Some((name, value)) = extra_header {
            response
                .headers_mut()
                .insert(name, axum::http::HeaderValue::from_static(value));
        }
        if disk_full {
            // For the monitor (`metrics::track`), which tells `/health`.
            response.extensions_mut().insert(DiskFull);
        }
        response
    }
}

/// Marks a response to a write that failed for lack of disk space.
#[derive(Debug, Clone, Copy)]
pub(super) struct DiskFull;

impl From<DatabaseError> for ApiError {
    fn from(error: DatabaseError) -> Self {
        match error {
            DatabaseError::PoolExhausted { .. } => Self::Unavailable(error.to_string()),
            DatabaseError::Connection(failure) => {
                Self::Unavailable(format!("database unavailable: {}", failure.kind.cause()))
            }
            DatabaseError::Query(error) => Self::from(error),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_connection_lost(&error) {
            return Self::Unavailable(format!("database unavailable: {error}"));
        }
        // SQLSTATE class 53, insufficient resources: the server cannot do it now, though the
        // request is sound.
        match error
            .as_database_error()
            .and_then(sqlx::error::DatabaseError::code)
            .as_deref()
        {
            Some("53100") => return Self::DiskFull,
            Some("53200") => {
                return Self::Unavailable(
                    "the database server is out of memory: try again shortly".to_owned(),
                );
            }
            Some("53000") => {
                return Self::Unavailable(format!(
                    "the database server lacks the resources for this now: {}",
                    error
                        .as_database_error()
                        .map_or_else(String::new, |database| database.message().to_owned())
                ));
            }
            _ => {}
        }
        Self::Internal(Box::new(error))
    }
}

/// How long a client is told to wait before retrying a 503.
pub(super) const RETRY_AFTER_SECONDS: &str = "1";

/// `axum::Json` whose rejections use our error format: 400 malformed, 415 wrong content type,
/// 413 too large, 422 wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// The JSON type a body (or a part of it) must have before its fields are read: serde would
/// also build a struct from an array of its field values (`[null, null]`), which no client
/// means.
pub trait JsonShape {
    /// Where `value`, found at `location`, is not of this shape.
    fn misshapen(value: &serde_json::Value, location: &[serde_json::Value]) -> Option<FieldError>;
}

/// For a body that is a JSON object.
pub(super) fn object_at(
    value: &serde_json::Value,
    location: &[serde_json::Value],
) -> Option<FieldError> {
    (!value.is_object())
        .then(|| FieldError::new(location, "expected a JSON object", "type_error.dict"))
}

impl<T: JsonShape> JsonShape for Vec<T> {
    fn misshapen(value: &serde_json::Value, location: &[serde_json::Value]) -> Option<FieldError> {
        let Some(items) = value.as_array() else {
            return Some(FieldError::new(
                location,
                "expected a JSON array",
                "type_error.list",
            ));
        };
        items.iter().enumerate().find_map(|(index, item)| {
            let mut place = location.to_vec();
            place.push(json!(index));
            T::misshapen(item, &place)
        })
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned + JsonShape,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let read = axum::Json::<serde_json::Value>::from_request(request, state);
        let Ok(parsed) = tokio::time::timeout(super::BODY_READ_TIMEOUT, read).await else {
            return Err(ApiError::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                super::BODY_READ_TIMEOUT.as_secs()
            )));
        };
        match parsed {
            Ok(axum::Json(value)) => {
                if let Some(error) = T::misshapen(&value, &[json!("body")]) {
                    return Err(ApiError::fields(vec![error]));
                }
                serde_json::from_value(value).map(Self).map_err(|error| {
                    ApiError::fields(vec![FieldError::new(
                        &[json!("body")],
                        error.to_string(),
                        "value_error",
                    )])
                })
            }
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonSyntaxError(error) => {
                    ApiError::BadRequest(format!("malformed JSON: {}", error.body_text()))
                }
                JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
                    "expected a request with `Content-Type: application/json`".to_owned(),
                ),
                other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    ApiError::PayloadTooLarge(format!(
                        "request body is larger than the limit of {} bytes",
                        super::BODY_LIMIT
                    ))
                }
                other => ApiError::BadRequest(other.body_text()),
            }),
        }
    }
}

/// `axum::extract::Query` with 422 naming the bad parameter.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::fields(vec![FieldError::new(
                    &[json!("query")],
                    rejection.body_text(),
                    "type_error",
                )])
            })
    }
}

/// Gives the bodiless errors axum answers by itself (404 no such route, 405 wrong method) the
/// `{"detail": ...}` body of every other error, keeping their headers (`Allow`).
pub(super) async fn detail_for_empty_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() && response.headers().get(header::CONTENT_TYPE).is_none()) {
        return response;
    }
    let (parts, _empty) = response.into_parts();
    let detail = ErrorDetail::Message(status.canonical_reason().unwrap_or("Error").to_owned());
    let mut answer = (status, axum::Json(ErrorBody { detail })).into_response();
    // The empty body's `Content-Length: 0` (set by the router) would contradict the detail's.
    for (name, value) in parts
        .headers
        .iter()
        .filter(|(name, _)| *name != header::CONTENT_LENGTH)
    {
        answer
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    answer
}
