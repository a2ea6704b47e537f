//! `/.well-known/*`: the public keys and the discovery document.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;

use super::Tag;
use super::responses::Errors;
use crate::error::ApiError;
use crate::state::SharedState;

/// The public keys and discovery.
pub struct WellKnownApi {
    state: SharedState,
}

impl WellKnownApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// One public key (RFC 7517).
#[derive(Debug, Object, Deserialize)]
#[oai(skip_serializing_if_is_none)]
pub struct JwkDocument {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id, the `kid` header of the tokens it signed.
    pub kid: Option<String>,
    /// The algorithm the key signs with.
    pub alg: Option<String>,
    /// Always `sig`.
    #[oai(rename = "use")]
    #[serde(rename = "use")]
    pub key_use: Option<String>,
    /// RSA modulus.
    pub n: Option<String>,
    /// RSA exponent.
    pub e: Option<String>,
    /// Curve (`P-256`, `Ed25519`).
    pub crv: Option<String>,
    /// Curve point x.
    pub x: Option<String>,
    /// Curve point y.
    pub y: Option<String>,
}

/// Every key that may have signed a token still in circulation.
#[derive(Debug, Object, Deserialize)]
pub struct JwkSetDocument {
    /// The keys.
    pub keys: Vec<JwkDocument>,
}

/// The public keys, cacheable.
#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The key set.
    #[oai(status = 200)]
    Ok(
        Json<JwkSetDocument>,
        /// Verifiers may cache the keys this long (they refetch on an unknown `kid`).
        #[oai(header = "Cache-Control")]
        String,
    ),
}

/// Where to find the issuer's keys.
#[derive(Debug, Object)]
pub struct Discovery {
    /// The `iss` of every token.
    pub issuer: String,
    /// The key set's URL.
    pub jwks_uri: String,
    /// Algorithms tokens are signed with.
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Subject identifier types.
    pub subject_types_supported: Vec<String>,
}

#[OpenApi(tag = "Tag::Keys")]
impl WellKnownApi {
    /// The public signing keys (JWKS)
    #[oai(path = "/.well-known/jwks.json", method = "get", operation_id = "getJwks")]
    async fn jwks(&self) -> Result<JwksResponse, Errors<0>> {
        let value = serde_json::to_value(self.state.keys.load().jwks()).map_err(anyhow::Error::from)?;
        let document: JwkSetDocument = serde_json::from_value(value).map_err(anyhow::Error::from)?;
        Ok(JwksResponse::Ok(Json(document), "public, max-age=300".to_owned()))
    }

    /// Discovery document
    #[oai(
        path = "/.well-known/openid-configuration",
        method = "get",
        operation_id = "getDiscovery"
    )]
    async fn discovery(&self) -> Result<Json<Discovery>, Errors<0>> {
        let issuer = self.state.validator.issuer().trim_end_matches('/').to_owned();
        let algorithms = self
            .state
            .keys
            .load()
            .algorithms()
            .iter()
            .map(|alg| {
                serde_json::to_value(alg)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            })
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("an algorithm without a name")))?;
        Ok(Json(Discovery {
            jwks_uri: format!("{issuer}/.well-known/jwks.json"),
            issuer,
            id_token_signing_alg_values_supported: algorithms,
            subject_types_supported: vec!["public".to_owned()],
        }))
    }
}
