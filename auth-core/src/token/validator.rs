//! Verifying an access token: structure, header, key, signature, claims.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::claims::AccessClaims;
use super::keyset::KeySet;
use super::{MAX_TOKEN_BYTES, header};
use crate::revocation::unix_now;

/// The longest signature of any accepted algorithm (RSA with an 8192-bit key).
const MAX_SIGNATURE_BYTES: usize = 1024;

/// Why a token was refused. The variants are for logs and metrics; clients only ever learn that
/// the token is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("token too large")]
    TooLarge,
    /// Not three canonical base64url segments with a JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// A `crit`, `jwk`, `jku`, `x5u` or `x5c` header.
    #[error("forbidden header parameter")]
    ForbiddenHeader,
    /// `typ` is not `at+jwt`.
    #[error("not an access token")]
    WrongType,
    /// No trusted key has this `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header's `alg` is not the key's algorithm.
    #[error("algorithm does not match the key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// Past `exp` (plus leeway).
    #[error("token expired")]
    Expired,
    /// Before `nbf` (minus leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` longer than the issuer's token lifetime (plus leeway).
    #[error("token lifetime too long")]
    LifetimeTooLong,
    /// Wrong `iss`.
    #[error("wrong issuer")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claim")]
    InvalidClaims,
}

impl TokenError {
    /// A low-cardinality label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::TooLarge => "too_large",
            TokenError::Malformed => "malformed",
            TokenError::ForbiddenHeader => "forbidden_header",
            TokenError::WrongType => "wrong_type",
            TokenError::UnknownKey => "unknown_key",
            TokenError::AlgorithmMismatch => "algorithm_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::NotYetValid => "not_yet_valid",
            TokenError::IssuedInFuture => "issued_in_future",
            TokenError::LifetimeTooLong => "lifetime_too_long",
            TokenError::WrongIssuer => "wrong_issuer",
            TokenError::WrongAudience => "wrong_audience",
            TokenError::InvalidClaims => "invalid_claims",
        }
    }
}

/// What a validator checks claims against.
#[derive(Debug, Clone)]
pub struct ValidatorSettings {
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The longest `exp - iat` accepted (plus the leeway): the issuer's access-token lifetime. A
    /// token claiming more was not minted by that issuer's rules, whatever key signed it.
    pub max_lifetime: Duration,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// Its claims.
    pub claims: AccessClaims,
    /// The key that signed it.
    pub kid: String,
}

/// Verifies tokens against a key set and the expected claims.
#[derive(Debug, Clone)]
pub struct TokenValidator {
    settings: ValidatorSettings,
}

impl TokenValidator {
    /// A validator for tokens of this issuer and audience.
    pub fn new(settings: ValidatorSettings) -> Self {
        Self { settings }
    }

    /// The expected issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Checks structure, header, key, signature and claims, in that order (cheapest first, no key
    /// lookup for a token that is not even well-formed, no claims parsed before the signature
    /// holds). Each segment is decoded and parsed exactly once.
    pub fn validate(&self, token: &str, keys: &KeySet) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut segments = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(TokenError::Malformed);
        };
        // Every segment is decoded by an engine that accepts canonical unpadded base64url only
        // (URL-safe alphabet, no `=`, zero trailing bits), so no second spelling of a token passes.
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header_fields = header::check(header.as_bytes())?;
        let key = keys.get(&header_fields.kid).ok_or(TokenError::UnknownKey)?;
        let algorithm = header_fields.alg;
        if algorithm != key.algorithm {
            return Err(TokenError::AlgorithmMismatch);
        }
        let message = &token[..header.len() + 1 + payload.len()];
        let mut raw_signature = [0; MAX_SIGNATURE_BYTES];
        let length = URL_SAFE_NO_PAD
            .decode_slice(signature, &mut raw_signature)
            .map_err(|_| TokenError::BadSignature)?;
        if !key.verifies(message.as_bytes(), &raw_signature[..length]) {
            return Err(TokenError::BadSignature);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        // serde's derive refuses a missing, mistyped or duplicated claim.
        let claims: AccessClaims = serde_json::from_slice(&json).map_err(|_| TokenError::InvalidClaims)?;
        self.check_claims(&claims, unix_now())?;
        Ok(VerifiedToken {
            claims,
            kid: header_fields.kid,
        })
    }

    /// The registered-claim checks: `exp`, `nbf` and `iat` within the leeway, a lifetime no longer
    /// than the issuer's, then `iss` and `aud`.
    fn check_claims(&self, claims: &AccessClaims, now: i64) -> Result<(), TokenError> {
        let seconds = |duration: Duration| i64::try_from(duration.as_secs()).unwrap_or(i64::MAX);
        let leeway = seconds(self.settings.leeway);
        if claims.exp.saturating_add(leeway) < now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.saturating_sub(leeway) > now {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.saturating_sub(leeway) > now {
            return Err(TokenError::IssuedInFuture);
        }
        if claims.exp.saturating_sub(claims.iat) > seconds(self.settings.max_lifetime).saturating_add(leeway)
        {
            return Err(TokenError::LifetimeTooLong);
        }
        if claims.iss != self.settings.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.settings.audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(())
    }
}
