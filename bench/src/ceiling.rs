//! The ceilings the verifier is measured against, each served by its own process (as the verifier
//! is): a poem handler that only answers 200, and handlers that only check an RS256 signature —
//! with the key parsed once (what the verifier does), or rebuilt on every call as
//! `jsonwebtoken::crypto::verify` does (what a typical Rust service does).

use std::sync::Arc;

use aws_lc_rs::signature::{ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::Data;
use poem::{EndpointExt, Request, Route, Server, handler};

/// How the signature-only ceiling checks a signature.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SignatureCheck {
    /// An aws-lc key parsed once at start.
    Parsed,
    /// `jsonwebtoken::crypto::verify`, which rebuilds the key on every call.
    Jsonwebtoken,
}

enum Verifier {
    Parsed(ParsedPublicKey),
    Jsonwebtoken(DecodingKey),
}

impl Verifier {
    fn verifies(&self, message: &str, signature: &str) -> bool {
        match self {
            Verifier::Parsed(key) => URL_SAFE_NO_PAD
                .decode(signature)
                .is_ok_and(|raw| key.verify_sig(message.as_bytes(), &raw).is_ok()),
            Verifier::Jsonwebtoken(key) => {
                jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::RS256)
                    .unwrap_or(false)
            }
        }
    }
}

#[handler]
fn trivial() -> StatusCode {
    StatusCode::OK
}

#[handler]
fn signature_only(req: &Request, Data(verifier): Data<&Arc<Verifier>>) -> StatusCode {
    let valid = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .and_then(|token| token.rsplit_once('.'))
        .is_some_and(|(message, signature)| verifier.verifies(message, signature));
    if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Serves the trivial handler on `addr`.
pub async fn serve_trivial(addr: String) -> anyhow::Result<()> {
    Server::new(TcpListener::bind(addr))
        .run(Route::new().at("/verify", trivial))
        .await?;
    Ok(())
}

/// Serves the signature-only handler on `addr`, trusting the RSA key in the JWKS file `jwks`.
pub async fn serve_signature_only(addr: String, jwks: String, check: SignatureCheck) -> anyhow::Result<()> {
    let set: JwkSet = serde_json::from_slice(&std::fs::read(jwks)?)?;
    let jwk = set.keys.first().ok_or_else(|| anyhow::anyhow!("an empty JWKS"))?;
    let verifier = match (check, &jwk.algorithm) {
        (SignatureCheck::Parsed, AlgorithmParameters::RSA(rsa)) => {
            let (n, e) = (URL_SAFE_NO_PAD.decode(&rsa.n)?, URL_SAFE_NO_PAD.decode(&rsa.e)?);
            let key = RsaPublicKeyComponents { n: &n[..], e: &e[..] }
                .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
                .map_err(|error| anyhow::anyhow!("an unusable RSA key: {error}"))?;
            Verifier::Parsed(key)
        }
        (SignatureCheck::Jsonwebtoken, _) => Verifier::Jsonwebtoken(DecodingKey::from_jwk(jwk)?),
        _ => anyhow::bail!("the JWKS holds no RSA key"),
    };
    let app = Route::new()
        .at("/verify", signature_only)
        .data(Arc::new(verifier));
    Server::new(TcpListener::bind(addr)).run(app).await?;
    Ok(())
}
