//! A bounded cache of verified tokens, keyed by the SHA-256 of the exact token bytes: the signature
//! check is most of the cost of a request, and clients reuse one token for many requests. A
//! token that differs in any byte (even a non-canonical re-encoding) is a different key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use auth_core::token::VerifiedToken;
use poem::http::HeaderValue;
use sha2::{Digest, Sha256};

use crate::responses::IDENTITY_HEADERS;

/// A verified token with the identity header values it grants, computed once.
#[derive(Debug)]
pub struct Admission {
    /// The token.
    pub token: VerifiedToken,
    /// The version of the key set that verified it.
    pub key_version: u64,
    // Text rather than shared `HeaderValue`s: copying a few bytes per response is cheaper than
    // every core bumping the same reference counts when one token is reused.
    headers: [Box<str>; IDENTITY_HEADERS.len()],
}

impl Admission {
    /// The admission of `token`, verified with key set `key_version`; identity values that are not
    /// valid header text are sent empty.
    pub fn new(token: VerifiedToken, key_version: u64) -> Self {
        let claims = &token.claims;
        let headers = [
            claims.sub.to_string(),
            claims.sid.to_string(),
            claims.email.clone(),
            claims.roles.join(","),
        ]
        .map(|value| {
            if is_field_value(&value) {
                value.into_boxed_str()
            } else {
                Box::default()
            }
        });
        Self {
            token,
            key_version,
            headers,
        }
    }

    /// The identity headers' values, in the order of [`IDENTITY_HEADERS`].
    pub fn header_values(&self) -> impl Iterator<Item = HeaderValue> + '_ {
        self.headers
            .iter()
            .map(|value| HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("")))
    }
}

/// Whether `value` may be sent as a header value as it is: no control characters other than tab
/// (RFC 9110 §5.5, the rule `HeaderValue` enforces), checked without building one.
fn is_field_value(value: &str) -> bool {
    value.bytes().all(|b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

/// The digest a token is cached under.
pub type TokenDigest = [u8; 32];

/// The cache.
pub struct TokenCache {
    entries: RwLock<HashMap<TokenDigest, Arc<Admission>>>,
    capacity: usize,
    leeway: i64,
}

/// The digest of `token`.
pub fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; `leeway` seconds as in validation.
    pub fn new(capacity: usize, leeway: i64) -> Self {
        Self {
            entries: RwLock::new(HashMap::with_capacity(capacity.min(1 << 16))),
            capacity,
            leeway,
        }
    }

    /// Whether the cache holds anything at all (capacity 0 turns it off).
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The verified token cached under `key`, if it is still within its validity at `now`.
    pub fn get(&self, key: &TokenDigest, now: i64) -> Option<Arc<Admission>> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let admission = entries.get(key)?;
        let claims = &admission.token.claims;
        (now <= claims.exp + self.leeway && now >= claims.nbf - self.leeway).then(|| admission.clone())
    }

    /// Remembers a verified token. When full, expired entries go first, then arbitrary ones.
    pub fn insert(&self, key: TokenDigest, admission: Arc<Admission>, now: i64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let leeway = self.leeway;
            entries.retain(|_, cached| cached.token.claims.exp + leeway >= now);
            if entries.len() >= self.capacity {
                let victims: Vec<TokenDigest> = entries.keys().take(self.capacity / 8 + 1).copied().collect();
                for victim in victims {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(key, admission);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use auth_core::token::AccessClaims;
    use uuid::Uuid;

    use super::*;

    fn token(exp: i64) -> Arc<Admission> {
        Arc::new(Admission::new(
            VerifiedToken {
                claims: AccessClaims {
                    iss: "i".into(),
                    aud: "a".into(),
                    sub: Uuid::new_v4(),
                    sid: Uuid::new_v4(),
                    jti: Uuid::new_v4(),
                    iat: exp - 900,
                    nbf: exp - 900,
                    exp,
                    email: "e@example.com".into(),
                    email_verified: true,
                    roles: vec![],
                },
                kid: "k".into(),
            },
            1,
        ))
    }

    #[test]
    fn entries_expire_with_their_tokens() {
        let cache = TokenCache::new(10, 30);
        cache.insert(digest("a"), token(1_000), 500);
        assert!(cache.get(&digest("a"), 1_030).is_some());
        assert!(cache.get(&digest("a"), 1_031).is_none());
        assert!(
            cache.get(&digest("b"), 500).is_none(),
            "another token is another key"
        );
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        let cache = TokenCache::new(16, 0);
        for i in 0..100 {
            cache.insert(digest(&i.to_string()), token(10_000), 0);
            assert!(cache.len() <= 16);
        }
    }
}
