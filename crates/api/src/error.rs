//! Every error the API answers, as RFC 9457 `application/problem+json` with a stable `code`.
//! Codes, statuses and titles come from the one table, [`backroom_kernel::Code`];
//! [`ApiError::parts`] only picks each error's code and writes its `detail`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backroom_kernel::{Code, Error, FieldError};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error on its way to becoming a response.
#[derive(Debug)]
pub enum ApiError {
    Domain(Error),
    MalformedJson(String),
    UnsupportedMediaType,
    PayloadTooLarge,
    Unauthenticated,
    /// A customer's route without a live customer token (none, malformed, unknown, signed
    /// out, expired, or of an erased customer).
    CustomerUnauthenticated,
    Forbidden,
    RouteNotFound,
    MethodNotAllowed,
    IdempotencyKeyRequired,
    CardDataRefused,
    /// The request's headers are over [`crate::edge::MAX_HEADERS_BYTES`] in all, one is over
    /// [`crate::edge::MAX_HEADER_BYTES`], or there are over [`crate::edge::MAX_HEADER_COUNT`].
    HeaderFieldsTooLarge,
    /// The request's URI is over [`crate::edge::MAX_URI_BYTES`].
    UriTooLong,
    /// The client is over a rate limit: `429 rate_limited` with `Retry-After` (whole seconds,
    /// at least 1). See [`crate::ratelimit::rate_limited`].
    RateLimited {
        retry_after: std::time::Duration,
    },
    /// A problem built by a handler (checkout outcomes, timeouts): its code, detail and extra
    /// members (an object or `null`). See [`ApiError::custom`].
    Custom {
        code: Code,
        detail: String,
        extra: serde_json::Value,
    },
}

/// The problem document (RFC 9457) plus our `code` and, for validation, `errors`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem; stable for each `code`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code, such as `validation_failed` or `insufficient_stock`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// Further members for some codes: `items` for `insufficient_stock` and `price_changed`,
    /// `reason` and `order_id` for `payment_declined`.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl From<backroom_auth::Forbidden> for ApiError {
    fn from(_: backroom_auth::Forbidden) -> Self {
        ApiError::Forbidden
    }
}

impl ApiError {
    /// A problem with `code` and `detail`, and `extra` (an object or `null`) merged into it.
    pub fn custom(code: Code, detail: impl Into<String>, extra: serde_json::Value) -> Self {
        ApiError::Custom { code, detail: detail.into(), extra }
    }

    /// The code and detail of each error; status and title are the code's in the table.
    fn parts(&self) -> (Code, String) {
        match self {
            ApiError::Domain(e) => (
                e.code(),
                match e {
                    Error::Validation(_) => "the request has invalid fields; see `errors`".into(),
                    Error::NotFound { entity } => format!("no such {entity}"),
                    Error::Refused { message, .. } => message.clone(),
                    Error::Unavailable(_) => "the store is busy; try again shortly".into(),
                    Error::Overloaded(why) => {
                        format!("the store is at capacity ({why}); nothing was done, retry after the Retry-After delay")
                    }
                    Error::Internal(_) => "something went wrong on our side".into(),
                },
            ),
            ApiError::MalformedJson(why) => (Code::MalformedJson, why.clone()),
            ApiError::UnsupportedMediaType => (Code::UnsupportedMediaType, "send the body as application/json".into()),
            ApiError::PayloadTooLarge => (Code::PayloadTooLarge, "the body is over 1 MiB".into()),
            ApiError::Unauthenticated => (Code::Unauthenticated, "send Authorization: Bearer <api key>".into()),
            ApiError::CustomerUnauthenticated => (
                Code::Unauthenticated,
                "send Authorization: Bearer <customer token> with a live token from POST /store/auth/token".into(),
            ),
            ApiError::Forbidden => (Code::Forbidden, "this key's role does not allow that".into()),
            ApiError::RouteNotFound => (Code::NotFound, "no such route".into()),
            ApiError::MethodNotAllowed => (Code::MethodNotAllowed, "this route does not take that method".into()),
            ApiError::IdempotencyKeyRequired => (
                Code::IdempotencyKeyRequired,
                "send an Idempotency-Key header of 1–255 printable ASCII characters".into(),
            ),
            ApiError::CardDataRefused => (
                Code::CardDataRefused,
                "the request carries what looks like a card number; send a payment provider token instead".into(),
            ),
            ApiError::HeaderFieldsTooLarge => (
                Code::RequestHeaderFieldsTooLarge,
                format!(
                    "the request's headers are over {} bytes in all, one is over {} bytes, or there are over {}",
                    crate::edge::MAX_HEADERS_BYTES,
                    crate::edge::MAX_HEADER_BYTES,
                    crate::edge::MAX_HEADER_COUNT
                ),
            ),
            ApiError::UriTooLong => {
                (Code::UriTooLong, format!("the request's URI is over {} bytes", crate::edge::MAX_URI_BYTES))
            }
            ApiError::RateLimited { retry_after } => (
                Code::RateLimited,
                format!(
                    "too many requests from this client; retry after {} seconds",
                    crate::ratelimit::retry_after_value(*retry_after).to_str().unwrap_or("1")
                ),
            ),
            ApiError::Custom { code, detail, .. } => (*code, detail.clone()),
        }
    }

    pub fn problem(&self) -> Problem {
        let (code, detail) = self.parts();
        Problem {
            kind: format!("https://backroom.dev/problems/{code}"),
            title: code.title().into(),
            status: code.status(),
            detail,
            code: code.as_str().into(),
            errors: match self {
                ApiError::Domain(Error::Validation(errors)) => Some(errors.clone()),
                _ => None,
            },
            extra: match self {
                ApiError::Domain(Error::Refused { details, .. }) | ApiError::Custom { extra: details, .. } => {
                    details.as_object().cloned().unwrap_or_default()
                }
                _ => Default::default(),
            },
        }
    }
}

/// A problem+json response for `problem`.
pub fn problem_response(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut res = (status, body).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Domain(Error::Internal(cause)) | ApiError::Domain(Error::Unavailable(cause)) => {
                // The cause chain goes to the log, never to the client.
                let mut chain = cause.to_string();
                let mut src = cause.source();
                while let Some(s) = src {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    src = s.source();
                }
                tracing::error!(error = %chain, "request failed");
            }
            _ => {}
        }
        let mut res = problem_response(&self.problem());
        if res.status() == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme that would work.
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited { retry_after } = &self {
            res.headers_mut().insert(header::RETRY_AFTER, crate::ratelimit::retry_after_value(*retry_after));
        }
        if res.status() == StatusCode::SERVICE_UNAVAILABLE {
            // Every 503 is worth retrying: say when.
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        res
    }
}

/// The `Retry-After` of every `503`, in seconds: long enough for a writer's queue to drain.
pub const RETRY_AFTER_SECONDS: &str = "1";

pub type ApiResult<T> = Result<T, ApiError>;
