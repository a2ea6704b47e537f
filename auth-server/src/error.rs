//! The server's one error type, and the only place errors become HTTP responses (RFC 9457
//! `application/problem+json`). Internal details are logged here and never sent to clients.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::Object;

/// A field-level problem with a request.
#[derive(Debug, Clone, PartialEq, Eq, Object, serde::Serialize)]
pub struct FieldError {
    /// The field, as a JSON path (`email`, `profile.theme`); empty for the body as a whole.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// An RFC 9457 problem document, the body of every error response.
#[derive(Debug, Clone, Object, serde::Serialize)]
pub struct Problem {
    /// A URI identifying the kind of problem.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this case.
    pub detail: String,
    /// Field-level details, for validation problems.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not valid JSON, or a field has the wrong type.
    #[error("malformed request: {detail}")]
    MalformedBody {
        /// The offending field, when known.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// The request is well-formed but some fields are invalid.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// Wrong credentials; deliberately says nothing about which part was wrong.
    #[error("invalid credentials")]
    BadCredentials,
    /// The bearer token is missing, invalid, expired or revoked.
    #[error("invalid token")]
    BadToken,
    /// The refresh token is unknown, expired, revoked or was reused.
    #[error("invalid refresh token")]
    BadRefreshToken,
    /// Authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// The right password, for an address not verified yet (`AUTH_REQUIRE_VERIFIED_EMAIL`).
    #[error("email not verified")]
    EmailNotVerified,
    /// No such resource (for this user).
    #[error("not found")]
    NotFound,
    /// The resource exists already.
    #[error("conflict on {field}")]
    Conflict {
        /// The field that must be unique.
        field: &'static str,
        /// A message for the client.
        detail: &'static str,
    },
    /// The body exceeds the configured limit.
    #[error("request body too large")]
    PayloadTooLarge,
    /// Too many attempts.
    #[error("rate limited")]
    RateLimited {
        /// Seconds until the client may retry.
        retry_after: u64,
    },
    /// The server is at capacity (password hashing queue full).
    #[error("busy")]
    Busy {
        /// Seconds until the client may retry.
        retry_after: u64,
    },
    /// A dependency (database, Redis) is unavailable.
    #[error("{0} unavailable")]
    Unavailable(&'static str),
    /// A bug or an unforeseen failure.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// The status code.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MalformedBody { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadCredentials | ApiError::BadToken | ApiError::BadRefreshToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden | ApiError::EmailNotVerified => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Busy { .. } | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::MalformedBody { .. } => "malformed-request",
            ApiError::Validation(_) => "validation",
            ApiError::BadCredentials => "invalid-credentials",
            ApiError::BadToken => "invalid-token",
            ApiError::BadRefreshToken => "invalid-refresh-token",
            ApiError::Forbidden => "forbidden",
            ApiError::EmailNotVerified => "email-not-verified",
            ApiError::NotFound => "not-found",
            ApiError::Conflict { .. } => "conflict",
            ApiError::PayloadTooLarge => "payload-too-large",
            ApiError::RateLimited { .. } => "rate-limited",
            ApiError::Busy { .. } => "busy",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Unexpected(_) => "internal",
        }
    }

    /// The problem document sent to the client.
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let (detail, errors) = match self {
            ApiError::MalformedBody { field, detail } => (
                detail.clone(),
                field
                    .as_ref()
                    .map(|field| vec![FieldError::new(field, detail.clone())]),
            ),
            ApiError::Validation(errors) => {
                ("the request has invalid fields".to_owned(), Some(errors.clone()))
            }
            ApiError::BadCredentials => ("the credentials are not valid".to_owned(), None),
            ApiError::BadToken => (
                "the access token is missing, invalid, expired or revoked".to_owned(),
                None,
            ),
            ApiError::BadRefreshToken => (
                "the refresh token is invalid, expired or revoked".to_owned(),
                None,
            ),
            ApiError::Forbidden => ("you may not do this".to_owned(), None),
            ApiError::EmailNotVerified => (
                "confirm your email address with the link we mailed first (POST /api/auth/resend-verification sends a new one)"
                    .to_owned(),
                None,
            ),
            ApiError::NotFound => ("no such resource".to_owned(), None),
            ApiError::Conflict { field, detail } => {
                ((*detail).to_owned(), Some(vec![FieldError::new(field, *detail)]))
            }
            ApiError::PayloadTooLarge => ("the request body is too large".to_owned(), None),
            ApiError::RateLimited { .. } => ("too many attempts; retry later".to_owned(), None),
            ApiError::Busy { .. } => ("the server is at capacity; retry shortly".to_owned(), None),
            ApiError::Unavailable(dependency) => {
                (format!("the {dependency} is unavailable; retry shortly"), None)
            }
            ApiError::Unexpected(_) => ("an unexpected error occurred".to_owned(), None),
        };
        Problem {
            kind: format!("urn:auth-platform:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        }
    }

    /// The full HTTP response, with `WWW-Authenticate` on 401 and `Retry-After` on 429/503.
    pub fn to_response(&self) -> Response {
        match self {
            ApiError::Unexpected(error) => {
                tracing::error!(error = format!("{error:#}"), "unexpected error")
            }
            ApiError::Unavailable(dependency) => {
                tracing::warn!(dependency, "dependency unavailable")
            }
            _ => {}
        }
        let mut response = problem_response(&self.problem());
        let headers = response.headers_mut();
        match self {
            ApiError::BadToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"auth-platform\", error=\"invalid_token\""),
                );
            }
            ApiError::BadCredentials | ApiError::BadRefreshToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"auth-platform\""),
                );
            }
            ApiError::RateLimited { retry_after } | ApiError::Busy { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u64));
            }
            _ => {}
        }
        response
    }
}

/// A problem document as a response.
pub fn problem_response(problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).expect("a problem serializes");
    Response::builder()
        .status(StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/problem+json")
        .body(body)
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        self.to_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            return ApiError::Unavailable("database");
        }
        crate::constraints::from_violation(&error)
            .unwrap_or_else(|| ApiError::Unexpected(anyhow::Error::new(error).context("database")))
    }
}

/// Whether the database is down or unreachable, as opposed to refusing a statement.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
            true
        }
        // connection exceptions (08…) and operator intervention (57…: shutdown, crash recovery)
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

impl From<redis::RedisError> for ApiError {
    fn from(_: redis::RedisError) -> Self {
        ApiError::Unavailable("session store")
    }
}

impl From<bb8::RunError<redis::RedisError>> for ApiError {
    fn from(_: bb8::RunError<redis::RedisError>) -> Self {
        ApiError::Unavailable("session store")
    }
}

impl From<crate::passwords::HashError> for ApiError {
    fn from(error: crate::passwords::HashError) -> Self {
        match error {
            crate::passwords::HashError::Busy { retry_after } => ApiError::Busy { retry_after },
            crate::passwords::HashError::Failed(reason) => ApiError::Unexpected(anyhow::anyhow!(reason)),
        }
    }
}
