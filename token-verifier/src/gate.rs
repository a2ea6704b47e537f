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
use crate::original::methods;
use crate::path::{CanonicalPath, canonicalize};
use crate::rules::Rules;

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
    /// A forward-auth request whose original request cannot be trusted (not described exactly
    /// once, described two ways, or carrying an identity header of its own).
    BadRequest,
}

/// A decision and the canonical path it was made on (none when the path has no canonical form).
pub struct Verdict {
    /// What to do.
    pub decision: Decision,
    /// The path the decision is about, as the reverse proxy forwards it.
    pub path: Option<CanonicalPath>,
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
    /// Assume the app may take a `POST`'s method from `_method` in its body.
    pub body_method_overrides: bool,
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
    /// Decides on a request for `method` on `path` (raw) with `query` and `headers`.
    pub async fn decide(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Verdict {
        let path = canonicalize(path).ok();
        let decision = match &path {
            Some(path) => self.evaluate(method, path, query, headers).await,
            None => Decision::BadPath,
        };
        self.count(&decision);
        Verdict { decision, path }
    }

    /// Refuses a request that cannot be described (counted like every decision).
    pub fn bad_request(&self) -> Decision {
        self.count(&Decision::BadRequest);
        Decision::BadRequest
    }

    fn count(&self, decision: &Decision) {
        let counter = match decision {
            Decision::Allow(_) => &self.metrics.allowed,
            Decision::Public => &self.metrics.public,
            Decision::Unauthorized { .. } => &self.metrics.unauthorized,
            Decision::Forbidden => &self.metrics.forbidden,
            Decision::Unavailable => &self.metrics.unavailable,
            Decision::BadPath => &self.metrics.bad_path,
            Decision::BadRequest => &self.metrics.bad_request,
        };
        counter.inc();
    }

    fn reject(&self, reason: &str) -> Decision {
        self.metrics.rejections.with_label_values(&[reason]).inc();
        Decision::Unauthorized { invalid: true }
    }

    async fn evaluate(
        &self,
        method: &str,
        path: &CanonicalPath,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Decision {
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
        let methods = || methods(method, query, headers, self.body_method_overrides);
        let roles = &verified.token.claims.roles;
        for required in self.rules.required_roles(methods, path) {
            if !roles.iter().any(|role| required.contains(role)) {
                self.metrics.rejections.with_label_values(&["missing_role"]).inc();
                return Decision::Forbidden;
            }
        }
        Decision::Allow(verified)
    }

    /// The verified token, from the cache or a full verification (validating again after a key
    /// refetch when the `kid` is unknown). A cached admission counts only while the key set it
    /// was verified with is current: a removed key takes its tokens with it.
    async fn verify(&self, token: &str) -> Result<Arc<Admission>, TokenError> {
        let now = unix_now();
        let key = self.cache.is_enabled().then(|| digest(token));
        let mut keys = self.keys.keys();
        if let Some(cached) = key.and_then(|key| self.cache.get(&key, now))
            && cached.key_version == keys.version
        {
            self.metrics.cache_hits.inc();
            return Ok(cached);
        }
        self.metrics.cache_misses.inc();
        let mut outcome = self.validator.validate(token, &keys.set);
        if outcome == Err(TokenError::UnknownKey) && self.keys.refetch_for_unknown_kid().await {
            keys = self.keys.keys();
            outcome = self.validator.validate(token, &keys.set);
        }
        let verified = Arc::new(Admission::new(outcome?, keys.version));
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
