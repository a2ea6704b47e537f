//! The public keys a verifier trusts, by `kid`, each with the one algorithm it may be used with.
//! Keys are parsed once, when the set is loaded: rebuilding an RSA key for every signature check
//! (as `jsonwebtoken::crypto::verify` does) costs about a tenth of the check.

use std::collections::HashMap;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};

/// One trusted public key, parsed for the one algorithm tokens signed with it may use.
#[derive(Clone)]
pub struct VerificationKey {
    key: ParsedPublicKey,
    /// The only algorithm tokens signed with this key may use.
    pub algorithm: Algorithm,
}

impl VerificationKey {
    /// Whether `signature` (raw bytes) is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
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
    let key = parse_key(&jwk.algorithm, algorithm)?;
    Some((kid, VerificationKey { key, algorithm }))
}

fn rsa_parameters(algorithm: Algorithm) -> Option<&'static RsaParameters> {
    Some(match algorithm {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

/// The key in `parameters`, parsed for `algorithm`; `None` when the key type or curve does not
/// belong to the algorithm (an RSA key cannot be used for ES256) or the key is malformed.
fn parse_key(parameters: &AlgorithmParameters, algorithm: Algorithm) -> Option<ParsedPublicKey> {
    let decode = |text: &str| URL_SAFE_NO_PAD.decode(text).ok();
    match (parameters, algorithm) {
        (AlgorithmParameters::RSA(rsa), _) => {
            let (n, e) = (decode(&rsa.n)?, decode(&rsa.e)?);
            RsaPublicKeyComponents { n: &n[..], e: &e[..] }
                .to_parsed_public_key(rsa_parameters(algorithm)?)
                .ok()
        }
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256 | Algorithm::ES384) => {
            let verification: &'static signature::EcdsaVerificationAlgorithm = match (&ec.curve, algorithm) {
                (EllipticCurve::P256, Algorithm::ES256) => &signature::ECDSA_P256_SHA256_FIXED,
                (EllipticCurve::P384, Algorithm::ES384) => &signature::ECDSA_P384_SHA384_FIXED,
                _ => return None,
            };
            // The uncompressed point: 0x04, then x and y.
            let mut point = vec![4];
            point.extend(decode(&ec.x)?);
            point.extend(decode(&ec.y)?);
            ParsedPublicKey::new(verification, point).ok()
        }
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) if okp.curve == EllipticCurve::Ed25519 => {
            ParsedPublicKey::new(&signature::ED25519, decode(&okp.x)?).ok()
        }
        _ => None,
    }
}
