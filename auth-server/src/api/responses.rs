//! Error responses as the OpenAPI document shows them: each operation declares exactly the
//! statuses it can answer with, all as `application/problem+json` [`Problem`] bodies.

use poem::IntoResponse;
use poem_openapi::ApiResponse;
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;

use crate::error::{ApiError, Problem};

/// 400: malformed JSON or a field of the wrong type.
pub const BAD_REQUEST: u16 = 1;
/// 401: missing, invalid, expired or revoked credentials.
pub const UNAUTHORIZED: u16 = 1 << 1;
/// 403: authenticated but not allowed.
pub const FORBIDDEN: u16 = 1 << 2;
/// 404: no such resource.
pub const NOT_FOUND: u16 = 1 << 3;
/// 409: already exists.
pub const CONFLICT: u16 = 1 << 4;
/// 413: body too large.
pub const PAYLOAD_TOO_LARGE: u16 = 1 << 5;
/// 422: invalid fields.
pub const UNPROCESSABLE: u16 = 1 << 6;
/// 429: rate limited.
pub const TOO_MANY_REQUESTS: u16 = 1 << 7;
/// 503: a dependency is down or the server is at capacity.
pub const UNAVAILABLE: u16 = 1 << 8;

/// Every operation with a JSON body can answer these.
pub const BODY: u16 = BAD_REQUEST | PAYLOAD_TOO_LARGE | UNPROCESSABLE | UNAVAILABLE;

const STATUSES: [(u16, u16, &str); 9] = [
    (
        BAD_REQUEST,
        400,
        "The body is not valid JSON or a field has the wrong type.",
    ),
    (
        UNAUTHORIZED,
        401,
        "Missing, invalid, expired or revoked credentials.",
    ),
    (FORBIDDEN, 403, "Authenticated but not allowed."),
    (NOT_FOUND, 404, "No such resource."),
    (CONFLICT, 409, "The resource already exists."),
    (PAYLOAD_TOO_LARGE, 413, "The request body is too large."),
    (
        UNPROCESSABLE,
        422,
        "Some fields are invalid; `errors` lists them.",
    ),
    (TOO_MANY_REQUESTS, 429, "Too many attempts; see `Retry-After`."),
    (
        UNAVAILABLE,
        503,
        "A dependency is unavailable or the server is at capacity; see `Retry-After`.",
    ),
];

/// An [`ApiError`] documented as one of the statuses in `MASK`.
pub struct Errors<const MASK: u16>(pub ApiError);

impl<const MASK: u16, E: Into<ApiError>> From<E> for Errors<MASK> {
    fn from(error: E) -> Self {
        Errors(error.into())
    }
}

impl<const MASK: u16> From<Errors<MASK>> for poem::Error {
    fn from(errors: Errors<MASK>) -> Self {
        poem::Error::from(errors.0)
    }
}

impl<const MASK: u16> IntoResponse for Errors<MASK> {
    fn into_response(self) -> poem::Response {
        self.0.to_response()
    }
}

impl<const MASK: u16> ApiResponse for Errors<MASK> {
    fn meta() -> MetaResponses {
        let responses = STATUSES
            .iter()
            .filter(|(bit, _, _)| MASK & bit != 0)
            .map(|(_, status, description)| (*status, *description))
            .chain(std::iter::once((500, "An unexpected error.")))
            .map(|(status, description)| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/problem+json",
                    schema: Problem::schema_ref(),
                }],
                headers: header_for(status),
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

fn header_for(status: u16) -> Vec<MetaHeader> {
    let (name, description) = match status {
        401 => ("WWW-Authenticate", "The authentication scheme (RFC 6750)."),
        429 | 503 => ("Retry-After", "Seconds to wait before retrying."),
        _ => return Vec::new(),
    };
    vec![MetaHeader {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        required: true,
        deprecated: false,
        schema: MetaSchemaRef::Inline(Box::new(poem_openapi::registry::MetaSchema::new("string"))),
    }]
}
