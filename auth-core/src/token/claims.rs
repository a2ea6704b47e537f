//! The claims of an access token.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `typ` header of every access token (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";

/// Every claim the server puts in an access token; all of them are required when verifying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer (configuration).
    pub iss: String,
    /// The audience (configuration).
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The session id: one per login.
    pub sid: Uuid,
    /// The token id.
    pub jti: Uuid,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Not valid before (unix seconds).
    pub nbf: i64,
    /// Expires at (unix seconds).
    pub exp: i64,
    /// The user's email address.
    pub email: String,
    /// Whether the address has been verified.
    pub email_verified: bool,
    /// The user's roles.
    pub roles: Vec<String>,
}
