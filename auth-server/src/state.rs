//! What every request handler can reach: pools, keys, services, settings.

use std::sync::Arc;
use std::time::Duration;

use auth_core::readiness::Readiness;
use auth_core::redis::RedisPool;
use auth_core::revocation::RedisKeys;
use auth_core::token::TokenValidator;
use sqlx::PgPool;

use crate::access_tokens::TokenIssuer;
use crate::keys::SharedKeys;
use crate::metrics::ServerMetrics;
use crate::passwords::PasswordHasher;
use crate::rate_limit::RateLimiter;
use crate::service::revoker::Revoker;
use crate::settings::{RateLimits, RefreshDelivery};
use crate::store::users::Lockout;

/// Session and token lifetimes the flows need.
#[derive(Debug, Clone)]
pub struct Lifetimes {
    /// Access token lifetime.
    pub access: Duration,
    /// Sliding refresh lifetime.
    pub refresh: Duration,
    /// Absolute session lifetime.
    pub session_max: Duration,
    /// Redis session mirror lifetime.
    pub session_cache: Duration,
    /// Grace window for presenting a just-rotated refresh token again.
    pub reuse_grace: Duration,
}

/// The shared state, behind an `Arc`.
pub struct AppState {
    /// PostgreSQL.
    pub db: PgPool,
    /// Redis.
    pub redis: RedisPool,
    /// Redis key names.
    pub redis_keys: RedisKeys,
    /// Signing and verification keys.
    pub keys: SharedKeys,
    /// Signs access tokens.
    pub issuer: TokenIssuer,
    /// Verifies bearer tokens.
    pub validator: TokenValidator,
    /// bcrypt.
    pub hasher: PasswordHasher,
    /// Records and publishes revocations.
    pub revoker: Revoker,
    /// Rate limits.
    pub limiter: RateLimiter,
    /// The limits to apply.
    pub rate_limits: RateLimits,
    /// How failed logins lock an account.
    pub lockout: Lockout,
    /// How long a device or address stays known to an account.
    pub known_source_window: Duration,
    /// Lifetimes.
    pub lifetimes: Lifetimes,
    /// Where refresh tokens go.
    pub refresh_delivery: RefreshDelivery,
    /// Proxies whose `X-Forwarded-For` entries are trusted.
    pub trusted_proxy_hops: usize,
    /// Metrics.
    pub metrics: ServerMetrics,
    /// Readiness, shared with the admin listener.
    pub readiness: Readiness,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// Registration answers 202 for a new and a taken address alike.
    pub enumeration_safe_registration: bool,
    /// Logins need a verified address.
    pub require_verified_email: bool,
    /// Deletes dead rows (periodically, and when an administrator asks).
    pub cleanup: crate::service::cleanup::Cleanup,
}

/// The state as handlers receive it.
pub type SharedState = Arc<AppState>;
