//! Signing keys the tests control: the server loads them from a directory, and tests sign
//! arbitrary (including malicious) tokens with the same private key.

use std::path::PathBuf;

use auth_server::keys::{SigningKey, generate_pem};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use tempfile::TempDir;

/// A directory with one private key.
pub struct TestKeys {
    dir: TempDir,
    /// The key in it.
    pub key: SigningKey,
    /// The key as PKCS#8 PEM.
    pub pem: String,
}

impl TestKeys {
    /// A directory with a new `algorithm` key.
    pub fn new(algorithm: Algorithm) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (key, pem) = Self::add(&dir, "2026-01-01", algorithm);
        Self { dir, key, pem }
    }

    fn add(dir: &TempDir, name: &str, algorithm: Algorithm) -> (SigningKey, String) {
        let pem = generate_pem(algorithm).expect("a key generates");
        std::fs::write(dir.path().join(format!("{name}.pem")), &pem).expect("the key is written");
        (
            SigningKey::from_pem(name, pem.as_bytes()).expect("the key loads"),
            pem,
        )
    }

    /// Adds another key whose name sorts after the others (so it becomes the signing key).
    pub fn rotate(&self, name: &str, algorithm: Algorithm) -> SigningKey {
        Self::add(&self.dir, name, algorithm).0
    }

    /// The directory, for `AUTH_KEYS_DIR`.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Signs arbitrary header and claims JSON text with the key, bypassing every check.
    pub fn sign_raw(&self, header: &str, claims: &str) -> String {
        sign_raw_with(&self.key, header, claims)
    }

    /// Signs JSON values.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    /// The header our server writes, for this key.
    pub fn header(&self) -> Value {
        let alg = serde_json::to_value(self.key.algorithm).expect("an algorithm name");
        serde_json::json!({ "alg": alg, "typ": "at+jwt", "kid": self.key.kid })
    }
}

/// Signs `header.claims` with `key` (for foreign keys as well).
pub fn sign_raw_with(key: &SigningKey, header: &str, claims: &str) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key.encoding_key(), key.algorithm)
        .expect("signing works");
    format!("{message}.{signature}")
}

/// A fresh key that no server knows.
pub fn foreign_key(algorithm: Algorithm) -> SigningKey {
    let pem = generate_pem(algorithm).expect("a key generates");
    SigningKey::from_pem("foreign", pem.as_bytes()).expect("the key loads")
}

/// Claims like the server's, for `sub`/`sid`, valid for 15 minutes from now.
pub fn claims(sub: &str, sid: &str) -> Value {
    let now = auth_core::revocation::unix_now();
    serde_json::json!({
        "iss": "http://localhost:8080", "aud": "auth-platform",
        "sub": sub, "sid": sid, "jti": uuid::Uuid::new_v4(),
        "iat": now, "nbf": now, "exp": now + 900,
        "email": "forged@example.com", "email_verified": true, "roles": ["user"],
    })
}
