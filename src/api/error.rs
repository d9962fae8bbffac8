//! One error type for every route. Bodies are always `{"detail": ...}`, as in the guide's
//! service; a 5xx detail is logged, never sent.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tracing::error;

use crate::database::DatabaseError;

/// One invalid field (FastAPI's validation error item).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Where: e.g. `["body", "email"]`, `["path", "user_id"]`, `["body", 2, "username"]`.
    #[schema(value_type = Vec<Object>)]
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    #[must_use]
    pub fn new(loc: &[serde_json::Value], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.to_vec(),
            msg: msg.into(),
            kind: kind.to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not valid JSON.
    #[error("{0}")]
    BadRequest(String),
    /// 403: not allowed in this mode (e.g. database control against an external server).
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(&'static str),
    /// 409: a unique value is taken; `detail` says which.
    #[error("conflict")]
    Conflict(serde_json::Value),
    /// 413: the body is over the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: not `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: invalid fields, each named.
    #[error("validation failed")]
    Validation(serde_json::Value),
    /// 503 with `Retry-After`: the database is down or every connection is busy.
    #[error("{0}")]
    Unavailable(String),
    /// 500: logged in full, sent as a bare message.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    #[must_use]
    pub fn fields(errors: Vec<FieldError>) -> Self {
        Self::Validation(json!(errors))
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match self {
            Self::Conflict(detail) | Self::Validation(detail) => detail,
            Self::Internal(message) => {
                error!(%message, "internal error");
                json!("Internal server error")
            }
            Self::Unavailable(message) => {
                let body = axum::Json(json!({ "detail": message }));
                return (status, [(header::RETRY_AFTER, "1")], body).into_response();
            }
            other => json!(other.to_string()),
        };
        (status, axum::Json(json!({ "detail": detail }))).into_response()
    }
}

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
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Self::Unavailable("database unavailable".to_owned())
            }
            _ => Self::Internal(error.to_string()),
        }
    }
}

/// `axum::Json` whose rejections use our error format: 400 malformed, 415 wrong content type,
/// 413 too large, 422 wrong shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(match rejection {
                JsonRejection::JsonDataError(error) => ApiError::fields(vec![FieldError::new(
                    &[json!("body")],
                    error.body_text(),
                    "value_error",
                )]),
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
