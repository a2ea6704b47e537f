//! The answers the verifier gives, shared by forward-auth and the proxy.

use poem::Response;
use poem::http::header::{HeaderName, RETRY_AFTER, WWW_AUTHENTICATE};
use poem::http::{HeaderMap, HeaderValue, StatusCode};

use crate::cache::Admission;
use crate::gate::Decision;

/// The identity headers apps receive.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-auth-user-id",
    "x-auth-session-id",
    "x-auth-email",
    "x-auth-roles",
];

/// Sets the identity headers of an admitted request.
pub fn add_identity(headers: &mut HeaderMap, admission: &Admission) {
    for (name, value) in IDENTITY_HEADERS.into_iter().zip(admission.header_values()) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// Whether a header name reads as an identity header somewhere: any case, and with `_` for `-`
/// (CGI, PHP-FPM and WSGI servers turn both into the same `HTTP_X_AUTH_…` variable).
fn is_identity_spelling(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    name.len() >= 7
        && name[..7]
            .iter()
            .zip(b"x-auth-")
            .all(|(got, want)| got.to_ascii_lowercase() == *want || (*got == b'_' && *want == b'-'))
}

/// Whether a client sent any spelling of an identity header.
pub fn carries_identity(headers: &HeaderMap) -> bool {
    headers.keys().any(is_identity_spelling)
}

/// Removes every spelling of an `X-Auth-*` header a client sent, so an app never trusts a forged
/// identity.
pub fn strip_identity(headers: &mut HeaderMap) {
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_identity_spelling(name))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
}

fn problem(status: StatusCode, slug: &str) -> Response {
    let body = format!(
        r#"{{"type":"urn:auth-platform:problem:{slug}","title":"{}","status":{}}}"#,
        status.canonical_reason().unwrap_or("Error"),
        status.as_u16()
    );
    Response::builder()
        .status(status)
        .content_type("application/problem+json")
        .body(body)
}

/// The refusal for a decision that is not an allowance, with the RFC 6750 headers.
pub fn refusal(decision: &Decision) -> Response {
    match decision {
        Decision::Unauthorized { invalid } => {
            let challenge = if *invalid {
                "Bearer realm=\"auth-platform\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"auth-platform\""
            };
            let mut response = problem(StatusCode::UNAUTHORIZED, "invalid-token");
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
            response
        }
        Decision::Forbidden => {
            let mut response = problem(StatusCode::FORBIDDEN, "forbidden");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"auth-platform\", error=\"insufficient_scope\""),
            );
            response
        }
        Decision::Unavailable => {
            let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Decision::BadPath => problem(StatusCode::BAD_REQUEST, "bad-path"),
        Decision::BadRequest => problem(StatusCode::BAD_REQUEST, "bad-request"),
        Decision::Allow(_) | Decision::Public => Response::builder().status(StatusCode::OK).finish(),
    }
}
