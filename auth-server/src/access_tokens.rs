//! Issuing access tokens.

use std::time::Duration;

use auth_core::revocation::unix_now;
use auth_core::token::{AccessClaims, TOKEN_TYPE};
use jsonwebtoken::Header;
use uuid::Uuid;

use crate::keys::SharedKeys;

/// Who a token is for: the identity the verifier forwards to apps.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id.
    pub user_id: Uuid,
    /// The email address.
    pub email: String,
    /// Whether it is verified.
    pub email_verified: bool,
    /// The roles.
    pub roles: Vec<String>,
    /// When the user's tokens were last revoked wholesale (logout-all, password change), if ever.
    pub revoked_before: Option<i64>,
}

/// A signed access token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWS.
    pub token: String,
    /// Its `jti`.
    pub jti: Uuid,
    /// Its `exp`.
    pub expires_at: i64,
}

/// Signs access tokens with the key ring's active key.
#[derive(Clone)]
pub struct TokenIssuer {
    keys: SharedKeys,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl TokenIssuer {
    /// An issuer for `iss`/`aud` whose tokens live `ttl`.
    pub fn new(keys: SharedKeys, issuer: &str, audience: &str, ttl: Duration) -> Self {
        Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        }
    }

    /// A token for `identity` in session `sid`.
    pub fn issue(&self, identity: &Identity, sid: Uuid) -> anyhow::Result<IssuedToken> {
        // A user revocation covers tokens issued at or before its second; a token issued in that
        // same second after it must not be covered, so it is dated one second later.
        let iat = identity
            .revoked_before
            .map_or(unix_now(), |before| unix_now().max(before + 1));
        let expires_at = iat + i64::try_from(self.ttl.as_secs())?;
        let jti = Uuid::new_v4();
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: identity.user_id,
            sid,
            jti,
            iat,
            nbf: iat,
            exp: expires_at,
            email: identity.email.clone(),
            email_verified: identity.email_verified,
            roles: identity.roles.clone(),
        };
        let ring = self.keys.load();
        let key = ring.signing_key();
        let mut header = Header::new(key.algorithm);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key.encoding_key())?;
        Ok(IssuedToken {
            token,
            jti,
            expires_at,
        })
    }
}
