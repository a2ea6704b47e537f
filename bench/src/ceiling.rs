//! The two ceilings the verifier is measured against, each served by its own process (as the
//! verifier is): a poem handler that only answers 200, and one that only checks an RS256
//! signature.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use poem::http::StatusCode;
use poem::listener::TcpListener;
use poem::web::Data;
use poem::{EndpointExt, Request, Response, Route, Server, handler};

#[handler]
fn trivial() -> StatusCode {
    StatusCode::OK
}

#[handler]
fn signature_only(req: &Request, Data(key): Data<&Arc<DecodingKey>>) -> Response {
    let token = req
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let valid = token
        .and_then(|token| token.rsplit_once('.'))
        .is_some_and(|(message, signature)| {
            jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, Algorithm::RS256)
                .unwrap_or(false)
        });
    let status = if valid {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    Response::builder().status(status).finish()
}

/// Serves the trivial handler on `addr`.
pub async fn serve_trivial(addr: String) -> anyhow::Result<()> {
    Server::new(TcpListener::bind(addr))
        .run(Route::new().at("/verify", trivial))
        .await?;
    Ok(())
}

/// Serves the signature-only handler on `addr`, trusting the RSA key in the JWKS file `jwks`.
pub async fn serve_signature_only(addr: String, jwks: String) -> anyhow::Result<()> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_slice(&std::fs::read(jwks)?)?;
    let key = DecodingKey::from_jwk(set.keys.first().ok_or_else(|| anyhow::anyhow!("an empty JWKS"))?)?;
    let app = Route::new().at("/verify", signature_only).data(Arc::new(key));
    Server::new(TcpListener::bind(addr)).run(app).await?;
    Ok(())
}
