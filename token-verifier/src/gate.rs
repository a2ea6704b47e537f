//! The decision for one request: public path, or a valid, unrevoked token with the roles the
//! route needs.

use std::sync::Arc;
use std::time::Duration;

use auth_core::redis::RedisPool;
use auth_core::revocation::{
    FollowerStatus, LookupOutcome, RedisKeys, RevocationIndex, RevocationKind, lookup, unix_now,
};
use auth_core::token::{BearerError, TokenError, TokenValidator, VerifiedToken, bearer_token};
use poem::http::HeaderMap;
use poem::http::header::COOKIE;

use crate::cache::{Admission, TokenCache, digest};
use crate::keys::KeyStore;
use crate::metrics::VerifierMetrics;
use crate::rules::{Rules, is_safe_path};

/// What to do with a request.
#[derive(Debug)]
pub enum Decision {
    /// A valid, unrevoked token with the required roles.
    Allow(Arc<Admission>),
    /// A public path: no token needed.
    Public,
    /// No usable token; `invalid` when one was presented (RFC 6750 `error="invalid_token"`).
    Unauthorized {
        /// Whether a token was presented.
        invalid: bool,
    },
    /// The token lacks the role the route needs.
    Forbidden,
    /// The keys or the revocation state are unknown and the verifier fails closed.
    Unavailable,
    /// A path that could be read differently upstream (`/public/../admin`).
    BadPath,
}

/// How revocations are checked.
pub enum Revocations {
    /// The in-memory index following the stream.
    Index {
        /// The index.
        index: Arc<RevocationIndex>,
        /// Its follower's health.
        status: Arc<FollowerStatus>,
        /// How stale the index may get before the state counts as unknown.
        grace: Duration,
    },
    /// A Redis lookup per request.
    Lookup {
        /// The pool.
        redis: RedisPool,
        /// The key names.
        keys: RedisKeys,
    },
}

/// Everything a decision needs.
pub struct Gate {
    /// Validates tokens.
    pub validator: TokenValidator,
    /// The trusted keys.
    pub keys: Arc<KeyStore>,
    /// Verified tokens.
    pub cache: TokenCache,
    /// The revocation check.
    pub revocations: Revocations,
    /// Public paths and role rules.
    pub rules: Rules,
    /// The cookie a token may come in.
    pub token_cookie: Option<String>,
    /// Accept when the revocation state is unknown.
    pub fail_open: bool,
    /// Counters.
    pub metrics: VerifierMetrics,
}

fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name && !value.is_empty()).then_some(value))
}

impl Gate {
    /// Decides on a request for `method` `path` with `headers`.
    pub async fn decide(&self, method: &str, path: &str, headers: &HeaderMap) -> Decision {
        let decision = self.evaluate(method, path, headers).await;
        let counter = match &decision {
            Decision::Allow(_) => &self.metrics.allowed,
            Decision::Public => &self.metrics.public,
            Decision::Unauthorized { .. } => &self.metrics.unauthorized,
            Decision::Forbidden => &self.metrics.forbidden,
            Decision::Unavailable => &self.metrics.unavailable,
            Decision::BadPath => &self.metrics.bad_path,
        };
        counter.inc();
        decision
    }

    fn reject(&self, reason: &str) -> Decision {
        self.metrics.rejections.with_label_values(&[reason]).inc();
        Decision::Unauthorized { invalid: true }
    }

    async fn evaluate(&self, method: &str, path: &str, headers: &HeaderMap) -> Decision {
        if !is_safe_path(path) {
            return Decision::BadPath;
        }
        if self.rules.is_public(path) {
            return Decision::Public;
        }
        let token = match bearer_token(headers) {
            Ok(token) => token,
            Err(BearerError::Missing) => match self
                .token_cookie
                .as_deref()
                .and_then(|name| cookie_token(headers, name))
            {
                Some(token) => token,
                None => return Decision::Unauthorized { invalid: false },
            },
            Err(BearerError::Malformed) => return self.reject("malformed_header"),
        };
        // Without keys a valid token cannot be told from a forged one: not the client's fault.
        if !self.keys.is_loaded() {
            return Decision::Unavailable;
        }
        let verified = match self.verify(token).await {
            Ok(verified) => verified,
            Err(error) => return self.reject(error.label()),
        };
        match self.revoked(&verified.token).await {
            Ok(Some(kind)) => return self.reject(revoked_label(kind)),
            Ok(None) => {}
            Err(()) if self.fail_open => {
                self.metrics.failed_open.inc();
                tracing::warn!("FAILING OPEN: revocation state unknown, accepting a valid token");
            }
            Err(()) => return Decision::Unavailable,
        }
        if let Some(roles) = self.rules.required_roles(method, path)
            && !verified
                .token
                .claims
                .roles
                .iter()
                .any(|role| roles.contains(role))
        {
            self.metrics.rejections.with_label_values(&["missing_role"]).inc();
            return Decision::Forbidden;
        }
        Decision::Allow(verified)
    }

    /// The verified token, from the cache or a full verification (with one key refetch when the
    /// `kid` is unknown).
    async fn verify(&self, token: &str) -> Result<Arc<Admission>, TokenError> {
        let now = unix_now();
        let key = self.cache.is_enabled().then(|| digest(token));
        if let Some(cached) = key.and_then(|key| self.cache.get(&key, now)) {
            self.metrics.cache_hits.inc();
            return Ok(cached);
        }
        self.metrics.cache_misses.inc();
        let verified = match self.validator.validate(token, &self.keys.keys()) {
            Err(TokenError::UnknownKey) if self.keys.refetch_for_unknown_kid().await => {
                self.validator.validate(token, &self.keys.keys())
            }
            outcome => outcome,
        }?;
        let verified = Arc::new(Admission::new(verified));
        if let Some(key) = key {
            self.cache.insert(key, verified.clone(), now);
        }
        Ok(verified)
    }

    /// The revocation that applies, or `Err` when the state is unknown (Redis unreachable, or it
    /// lost the revocations and the server has not restored them yet).
    async fn revoked(&self, token: &VerifiedToken) -> Result<Option<RevocationKind>, ()> {
        match &self.revocations {
            Revocations::Index { index, status, grace } => {
                if !status.vouches(*grace) {
                    return Err(());
                }
                Ok(index.revoked_by(token))
            }
            Revocations::Lookup { redis, keys } => {
                let mut conn = redis.get().await.map_err(|_| ())?;
                match lookup(&mut *conn, keys, token).await {
                    Ok(LookupOutcome::Clear) => Ok(None),
                    Ok(LookupOutcome::Revoked(kind)) => Ok(Some(kind)),
                    Ok(LookupOutcome::Unknown) | Err(_) => Err(()),
                }
            }
        }
    }
}

fn revoked_label(kind: RevocationKind) -> &'static str {
    match kind {
        RevocationKind::Token => "revoked_jti",
        RevocationKind::Session => "revoked_sid",
        RevocationKind::User => "revoked_user",
        RevocationKind::Key => "revoked_kid",
    }
}
