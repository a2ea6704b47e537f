//! The public keys a verifier trusts, by `kid`, each with the one algorithm it may be used with.

use std::collections::HashMap;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// One trusted public key.
#[derive(Clone)]
pub struct VerificationKey {
    /// The key material.
    pub key: DecodingKey,
    /// The only algorithm tokens signed with this key may use.
    pub algorithm: Algorithm,
}

/// Keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerificationKey>,
}

/// Why a JWKS could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeySetError {
    /// The document is not a JWKS.
    #[error("not a JWK set: {0}")]
    Invalid(String),
    /// It holds no usable signing key.
    #[error("the JWK set holds no usable signing key")]
    Empty,
}

/// The asymmetric algorithms we accept; HMAC is never accepted from a JWKS (a public document).
fn signing_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// Parses a JWKS document (the JSON served at `/.well-known/jwks.json`).
    pub fn from_json(json: &[u8]) -> Result<Self, KeySetError> {
        let set: JwkSet =
            serde_json::from_slice(json).map_err(|error| KeySetError::Invalid(error.to_string()))?;
        Self::from_jwks(&set)
    }

    /// Keeps every key that has a `kid`, a supported asymmetric `alg` and (if stated) `use: sig`.
    /// A key without `alg` is skipped: guessing its algorithm is how algorithm confusion starts.
    pub fn from_jwks(set: &JwkSet) -> Result<Self, KeySetError> {
        let keys: HashMap<String, VerificationKey> = set.keys.iter().filter_map(usable_key).collect();
        if keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        Ok(Self { keys })
    }

    /// The key for `kid`.
    pub fn get(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.get(kid)
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn usable_key(jwk: &Jwk) -> Option<(String, VerificationKey)> {
    let kid = jwk.common.key_id.clone()?;
    if matches!(&jwk.common.public_key_use, Some(usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let algorithm = signing_algorithm(jwk.common.key_algorithm?)?;
    let key = DecodingKey::from_jwk(jwk).ok()?;
    // The key type must match the algorithm family (an RSA key cannot be used for ES256).
    if key.family() != algorithm.family() {
        return None;
    }
    Some((kid, VerificationKey { key, algorithm }))
}
