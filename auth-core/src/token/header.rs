//! The JOSE header checks jsonwebtoken does not make.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::TOKEN_TYPE;
use super::validator::TokenError;

/// The longest `kid` we look up; longer ones cannot be ours and must not trigger a key refetch.
const MAX_KID_LEN: usize = 128;

/// The header fields that matter; serde's derive refuses a duplicated field.
#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    typ: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jwk: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    jku: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5u: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    x5c: Option<Value>,
}

/// Records that a field is present, even as `null`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// What the validator needs from a header that passed the checks.
pub(super) struct CheckedHeader {
    pub alg: jsonwebtoken::Algorithm,
    pub kid: String,
}

/// Parses and checks the (already canonical base64url) header segment.
pub(super) fn check(segment: &[u8]) -> Result<CheckedHeader, TokenError> {
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    // `crit` names extensions we would have to understand; we understand none (RFC 7515 §4.1.11).
    // Embedded or referenced keys would let a token pick its own key.
    if header.crit.is_some()
        || header.jwk.is_some()
        || header.jku.is_some()
        || header.x5u.is_some()
        || header.x5c.is_some()
    {
        return Err(TokenError::ForbiddenHeader);
    }
    let typ_ok = header.typ.as_deref().is_some_and(|typ| {
        typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
    });
    if !typ_ok {
        return Err(TokenError::WrongType);
    }
    let kid = header.kid.ok_or(TokenError::Malformed)?;
    if kid.is_empty() || kid.len() > MAX_KID_LEN || !kid.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenError::Malformed);
    }
    // `none` (in any case) and unknown names are not algorithms at all.
    let alg = header.alg.parse().map_err(|_| TokenError::AlgorithmMismatch)?;
    Ok(CheckedHeader {
        alg,
        kid: kid.into_owned(),
    })
}
