//! Verifying an access token: structure, header, key, signature, claims.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};

use super::claims::AccessClaims;
use super::encoding::is_canonical_base64url;
use super::keyset::KeySet;
use super::{MAX_TOKEN_BYTES, header};

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
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
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

    /// The tolerated clock skew.
    pub fn leeway(&self) -> Duration {
        self.settings.leeway
    }

    /// Checks structure, header, key, signature and claims, in that order (cheapest first, and no
    /// key lookup for a token that is not even well-formed).
    pub fn validate(&self, token: &str, keys: &KeySet) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut segments = token.as_bytes().split(|&b| b == b'.');
        let (Some(header), Some(payload), Some(signature), None) =
            (segments.next(), segments.next(), segments.next(), segments.next())
        else {
            return Err(TokenError::Malformed);
        };
        if ![header, payload, signature]
            .iter()
            .all(|s| is_canonical_base64url(s))
        {
            return Err(TokenError::Malformed);
        }
        let header = header::check(header)?;
        let key = keys.get(&header.kid).ok_or(TokenError::UnknownKey)?;
        let algorithm = Algorithm::from_str(&header.alg).map_err(|_| TokenError::AlgorithmMismatch)?;
        if algorithm != key.algorithm {
            return Err(TokenError::AlgorithmMismatch);
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.key, &self.validation(algorithm))
            .map_err(|error| classify(error.kind()))?;
        Ok(VerifiedToken {
            claims: data.claims,
            kid: header.kid,
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.settings.leeway.as_secs();
        // jsonwebtoken requires only `exp` and skips `nbf` unless told otherwise.
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation
    }
}

fn classify(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::ImmatureSignature => TokenError::NotYetValid,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => TokenError::AlgorithmMismatch,
        ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => {
            TokenError::InvalidClaims
        }
        _ => TokenError::Malformed,
    }
}
