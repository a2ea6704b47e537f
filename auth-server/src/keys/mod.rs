//! The signing key ring: private keys loaded from a directory (a mounted Secret), all published in
//! the JWKS, one of them signing.

mod generate;
pub mod rotation;

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use auth_core::token::KeySet;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};

pub use generate::generate_pem;

/// The key ring in use, replaced whole when the managed key Secret changes.
pub type SharedKeys = Arc<ArcSwap<KeyRing>>;

/// Reads a PEM private key of one family.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;

/// A private key that can sign tokens.
pub struct SigningKey {
    /// Its id: the RFC 7638 thumbprint of its public key, so every replica derives the same one.
    pub kid: String,
    /// The algorithm it signs with.
    pub algorithm: Algorithm,
    /// Where it came from (a file stem, or `ephemeral`).
    pub name: String,
    encoding: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    /// Reads a PEM private key (RSA, EC P-256/P-384 or Ed25519; PKCS#1, SEC1 or PKCS#8).
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let candidates: [(Algorithm, PemParser); 4] = [
            (Algorithm::RS256, EncodingKey::from_rsa_pem),
            (Algorithm::ES256, EncodingKey::from_ec_pem),
            (Algorithm::ES384, EncodingKey::from_ec_pem),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem),
        ];
        candidates
            .into_iter()
            .find_map(|(algorithm, parse)| {
                let encoding = parse(pem).ok()?;
                Self::new(name, algorithm, encoding).ok()
            })
            .ok_or_else(|| KeyError(format!("{name}: not a usable RSA, EC or Ed25519 private key")))
    }

    fn new(name: &str, algorithm: Algorithm, encoding: EncodingKey) -> Result<Self, KeyError> {
        let broken = |what: &str| KeyError(format!("{name}: {what}"));
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).map_err(|_| broken("no public key"))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|_| broken("no thumbprint"))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        let key = Self {
            kid,
            algorithm,
            name: name.to_owned(),
            encoding,
            jwk,
        };
        key.self_test().map_err(|_| broken("cannot sign and verify"))?;
        Ok(key)
    }

    /// Signs and verifies a message, so a key that loads but cannot work is refused at start.
    fn self_test(&self) -> Result<(), jsonwebtoken::errors::Error> {
        let message = b"auth-platform key self-test";
        let signature = jsonwebtoken::crypto::sign(message, &self.encoding, self.algorithm)?;
        let public = jsonwebtoken::DecodingKey::from_jwk(&self.jwk)?;
        match jsonwebtoken::crypto::verify(&signature, message, &public, self.algorithm)? {
            true => Ok(()),
            false => Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into()),
        }
    }

    /// The private key, for signing.
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }
}

/// A key that could not be loaded; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("signing keys: {0}")]
pub struct KeyError(pub String);

/// All keys: every one published, one signing.
pub struct KeyRing {
    keys: Vec<SigningKey>,
    active: usize,
    jwks: JwkSet,
    verification: KeySet,
}

impl KeyRing {
    /// Loads every `*.pem` in `dir`. The active key is `active` (a file stem or kid) or else the
    /// file whose name sorts last, so naming keys by date makes the newest sign.
    pub fn load(dir: &Path, active: Option<&str>) -> Result<Self, KeyError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|error| KeyError(format!("cannot read {}: {error}", dir.display())))?;
        let mut files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "pem") && path.is_file())
            .collect();
        files.sort();
        let keys = files
            .iter()
            .map(|path| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let pem = std::fs::read(path)
                    .map_err(|error| KeyError(format!("cannot read {}: {error}", path.display())))?;
                SigningKey::from_pem(&name, &pem)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys, active).map_err(|KeyError(problem)| KeyError(format!("{}: {problem}", dir.display())))
    }

    /// One freshly generated key, for development only: it changes on every start.
    pub fn ephemeral(algorithm: Algorithm) -> Result<Self, KeyError> {
        let pem = generate_pem(algorithm)?;
        Self::new(vec![SigningKey::from_pem("ephemeral", pem.as_bytes())?], None)
    }

    fn new(keys: Vec<SigningKey>, active: Option<&str>) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError("no *.pem private keys".to_owned()));
        }
        let active = match active {
            Some(wanted) => keys
                .iter()
                .position(|key| key.name == wanted || key.kid == wanted)
                .ok_or_else(|| KeyError(format!("the active key {wanted} is not among the keys")))?,
            None => keys.len() - 1,
        };
        let jwks = JwkSet {
            keys: keys.iter().map(|key| key.jwk.clone()).collect(),
        };
        let verification = KeySet::from_jwks(&jwks).map_err(|error| KeyError(error.to_string()))?;
        Ok(Self {
            keys,
            active,
            jwks,
            verification,
        })
    }

    /// The key that signs new tokens.
    pub fn signing_key(&self) -> &SigningKey {
        &self.keys[self.active]
    }

    /// Every public key, as served at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// Every public key, for verifying our own tokens.
    pub fn verification_keys(&self) -> &KeySet {
        &self.verification
    }

    /// The algorithms of the published keys.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algorithms: Vec<Algorithm> = self.keys.iter().map(|key| key.algorithm).collect();
        algorithms.dedup();
        algorithms
    }
}

/// The algorithm named by a setting.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name {
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        other => Err(format!("{other} is not one of RS256, ES256, EdDSA")),
    }
}
