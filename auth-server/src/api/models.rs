//! Request and response bodies, documented in the OpenAPI schema.

use poem_openapi::Object;
use poem_openapi::types::{Example, MaybeUndefined};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::service::grants::Grant;
use crate::store::sessions::Session;
use crate::store::users::User;

/// The account the examples register, log in and change: Swagger UI's "Try it out" sends them
/// as they are, in that order.
pub const EXAMPLE_EMAIL: &str = "ada@example.com";
/// Its password.
pub const EXAMPLE_PASSWORD: &str = "correct horse battery staple";

/// A new account.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Email address (unique, case-insensitively; surrounding whitespace is trimmed).
    pub email: String,
    /// 8 to 72 bytes of UTF-8 (bcrypt's limit); common passwords, and the address itself, are
    /// refused.
    pub password: String,
    /// Optional unique username: 3 to 32 letters, digits, `.`, `_` or `-`.
    pub username: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
}

impl Example for RegisterRequest {
    fn example() -> Self {
        Self {
            email: EXAMPLE_EMAIL.to_owned(),
            password: EXAMPLE_PASSWORD.to_owned(),
            username: Some("ada".to_owned()),
            first_name: Some("Ada".to_owned()),
            last_name: Some("Lovelace".to_owned()),
        }
    }
}

/// Credentials: an email address or a username, and the password.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The email address (give this or `username`).
    pub email: Option<String>,
    /// The username (give this or `email`).
    pub username: Option<String>,
    /// The password.
    pub password: String,
    /// The device token this client received at an earlier login to this account: a login from a
    /// known device is never held back by other clients' failed attempts.
    pub device_token: Option<String>,
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self {
            email: Some(EXAMPLE_EMAIL.to_owned()),
            username: None,
            password: EXAMPLE_PASSWORD.to_owned(),
            device_token: None,
        }
    }
}

/// A refresh token; may be omitted when it is sent as the `refresh_token` cookie.
#[derive(Debug, Default, Object, Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshRequest {
    /// The refresh token from the last login or refresh.
    pub refresh_token: Option<String>,
}

/// A password change.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// The current password.
    pub current_password: String,
    /// The new password: 8 to 72 bytes, not common, not the current one.
    pub new_password: String,
}

impl Example for ChangePasswordRequest {
    fn example() -> Self {
        Self {
            current_password: EXAMPLE_PASSWORD.to_owned(),
            new_password: "a new and longer passphrase".to_owned(),
        }
    }
}

/// Confirmation of an account deletion.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccountRequest {
    /// The account's password.
    pub password: String,
}

impl Example for DeleteAccountRequest {
    fn example() -> Self {
        Self {
            password: EXAMPLE_PASSWORD.to_owned(),
        }
    }
}

/// Profile changes: omitted fields stay as they are, `null` clears a field.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    /// New username, or `null` to remove it.
    #[serde(default)]
    pub username: MaybeUndefined<String>,
    /// New given name, or `null`.
    #[serde(default)]
    pub first_name: MaybeUndefined<String>,
    /// New family name, or `null`.
    #[serde(default)]
    pub last_name: MaybeUndefined<String>,
    /// Free-form profile data (a JSON object up to 16 KiB); replaces the stored object.
    pub profile: Option<serde_json::Value>,
}

impl Example for ProfileUpdate {
    fn example() -> Self {
        Self {
            username: MaybeUndefined::Undefined,
            first_name: MaybeUndefined::Value("Augusta Ada".to_owned()),
            last_name: MaybeUndefined::Undefined,
            profile: Some(serde_json::json!({ "theme": "dark" })),
        }
    }
}

/// An account.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct UserView {
    /// Its id (the `sub` of its tokens).
    pub id: Uuid,
    /// Email address.
    pub email: String,
    /// Username.
    pub username: Option<String>,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Whether the email address is verified.
    pub email_verified: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Free-form profile data.
    pub profile: serde_json::Value,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            username: user.username,
            first_name: user.first_name,
            last_name: user.last_name,
            email_verified: user.email_verified,
            roles: user.roles,
            profile: user.profile,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct TokenPair {
    /// The access token (an RS256/ES256/EdDSA-signed JWT, `typ` `at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token; absent when it is delivered only as an httpOnly cookie.
    pub refresh_token: Option<String>,
    /// When the refresh token expires unless used.
    pub refresh_token_expires_at: OffsetDateTime,
}

/// The session tokens belong to.
#[derive(Debug, Object)]
pub struct SessionInfo {
    /// The session id (the `sid` claim).
    pub id: Uuid,
    /// When it expires unless refreshed.
    pub expires_at: OffsetDateTime,
}

/// The result of registering, logging in, refreshing or changing the password.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuthResponse {
    /// The account.
    pub user: UserView,
    /// The tokens.
    pub tokens: TokenPair,
    /// The session.
    pub session: SessionInfo,
    /// Login only: a device token for this client to keep and send with its next logins (given
    /// when it presented none valid for this account).
    pub device_token: Option<String>,
}

impl AuthResponse {
    /// The response for `grant`; the refresh token is left out of the body when `in_body` is false.
    pub fn new(grant: Grant, access_ttl: u64, in_body: bool) -> Self {
        Self {
            session: SessionInfo {
                id: grant.session_id,
                expires_at: grant.refresh_expires_at,
            },
            tokens: TokenPair {
                access_token: grant.access.token,
                token_type: "Bearer".to_owned(),
                expires_in: access_ttl,
                refresh_token: in_body.then(|| grant.refresh.encode()),
                refresh_token_expires_at: grant.refresh_expires_at,
            },
            user: grant.user.into(),
            device_token: None,
        }
    }
}

/// One of the user's sessions.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct SessionView {
    /// Its id.
    pub id: Uuid,
    /// The address it was created from.
    pub ip: Option<String>,
    /// The user agent it was created from.
    pub user_agent: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last refreshed.
    pub last_used_at: OffsetDateTime,
    /// Expires unless refreshed.
    pub expires_at: OffsetDateTime,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

impl SessionView {
    /// The view of `session` for a caller in session `current`.
    pub fn new(session: Session, current: Uuid) -> Self {
        Self {
            current: session.id == current,
            id: session.id,
            ip: session.ip,
            user_agent: session.user_agent,
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
        }
    }
}
