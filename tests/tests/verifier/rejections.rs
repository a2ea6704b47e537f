//! Every way a token can be bad, each its own test.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use platform_tests::keys::{foreign_key, sign_raw_with};
use serde_json::{Value, json};

use crate::support::{Fixture, fixture, fixture_with};

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn hmac_token(fx: &Fixture, secret: &[u8]) -> String {
    let mut header = fx.keys.header();
    header["alg"] = json!("HS256");
    let message = format!("{}.{}", encode(&header), encode(&fx.claims()));
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{signature}")
}

fn rsa_public_der(fx: &Fixture) -> Vec<u8> {
    let der = pem::parse(&fx.keys.pem).unwrap().into_contents();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).unwrap();
    aws_lc_rs::signature::KeyPair::public_key(&pair)
        .as_der()
        .unwrap()
        .as_ref()
        .to_vec()
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let fx = fixture().await;
    let response = fx.verifier.verify(&fx.user.access).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-user-id"], fx.user.id.as_str());
    let forged = fx.keys.sign(&fx.keys.header(), &fx.claims());
    assert_eq!(
        fx.verifier.verify(&forged).await.status(),
        200,
        "the fixture signs like the server"
    );
}

#[tokio::test]
async fn no_token_is_401_without_an_error_code() {
    let fx = fixture().await;
    let response = fx.verifier.verify_request("/").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"auth-platform\""
    );
}

#[tokio::test]
async fn garbage_is_refused() {
    let fx = fixture().await;
    for token in ["garbage", "a.b.c", "....", "eyJ.eyJ.sig"] {
        fx.assert_refused(token).await;
    }
}

#[tokio::test]
async fn alg_none_in_any_case_is_refused() {
    let fx = fixture().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut header = fx.keys.header();
        header["alg"] = json!(alg);
        fx.assert_refused(&format!("{}.{}.", encode(&header), encode(&fx.claims())))
            .await;
        fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_as_pem_is_refused() {
    let fx = fixture().await;
    let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", rsa_public_der(&fx)));
    fx.assert_refused(&hmac_token(&fx, pem.as_bytes())).await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_as_der_is_refused() {
    let fx = fixture().await;
    fx.assert_refused(&hmac_token(&fx, &rsa_public_der(&fx))).await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_as_jwk_is_refused() {
    let fx = fixture().await;
    let jwks = fx.server.get_text("/.well-known/jwks.json").await;
    let jwk: Value = serde_json::from_str::<Value>(&jwks).unwrap()["keys"][0].clone();
    fx.assert_refused(&hmac_token(&fx, jwk.to_string().as_bytes()))
        .await;
    fx.assert_refused(&hmac_token(&fx, jwk["n"].as_str().unwrap().as_bytes()))
        .await;
}

#[tokio::test]
async fn a_stripped_signature_is_refused() {
    let fx = fixture().await;
    let token = fx.user.access.clone();
    let unsigned = &token[..token.rfind('.').unwrap() + 1];
    fx.assert_refused(unsigned).await;
    fx.assert_refused(&token[..token.rfind('.').unwrap()]).await;
}

#[tokio::test]
async fn a_truncated_signature_is_refused() {
    let fx = fixture().await;
    let token = &fx.user.access;
    fx.assert_refused(&token[..token.len() - 4]).await;
}

#[tokio::test]
async fn a_foreign_signature_with_our_kid_is_refused() {
    let fx = fixture().await;
    let stranger = foreign_key(Algorithm::RS256);
    let token = sign_raw_with(&stranger, &fx.keys.header().to_string(), &fx.claims().to_string());
    fx.assert_refused(&token).await;
}

#[tokio::test]
async fn an_unknown_kid_is_refused() {
    let fx = fixture().await;
    let stranger = foreign_key(Algorithm::RS256);
    let mut header = fx.keys.header();
    header["kid"] = json!(stranger.kid);
    fx.assert_refused(&sign_raw_with(
        &stranger,
        &header.to_string(),
        &fx.claims().to_string(),
    ))
    .await;
}

#[tokio::test]
async fn a_kid_with_path_traversal_is_refused() {
    let fx = fixture().await;
    let mut header = fx.keys.header();
    header["kid"] = json!("../../../../etc/passwd");
    fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
}

#[tokio::test]
async fn a_kid_with_sql_injection_is_refused() {
    let fx = fixture().await;
    for kid in ["' OR '1'='1", "x'; DROP TABLE keys; --"] {
        let mut header = fx.keys.header();
        header["kid"] = json!(kid);
        fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
    }
}

async fn refused_with_claim(fx: &Fixture, edit: impl FnOnce(&mut Value)) {
    let mut claims = fx.claims();
    edit(&mut claims);
    fx.assert_refused(&fx.keys.sign(&fx.keys.header(), &claims)).await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| c["exp"] = json!(auth_core::revocation::unix_now() - 60)).await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| c["nbf"] = json!(auth_core::revocation::unix_now() + 300)).await;
}

#[tokio::test]
async fn a_missing_exp_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("exp");
    })
    .await;
}

#[tokio::test]
async fn an_exp_that_is_not_a_number_is_refused() {
    let fx = fixture().await;
    let far = (auth_core::revocation::unix_now() + 900).to_string();
    refused_with_claim(&fx, |c| c["exp"] = json!(far)).await;
    refused_with_claim(&fx, |c| c["exp"] = json!(null)).await;
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| c["iss"] = json!("https://evil.example")).await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("iss");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_or_missing_audience_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| c["aud"] = json!("another-api")).await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("aud");
    })
    .await;
}

#[tokio::test]
async fn a_missing_sub_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("sub");
    })
    .await;
}

#[tokio::test]
async fn a_missing_sid_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("sid");
    })
    .await;
}

#[tokio::test]
async fn a_missing_jti_is_refused() {
    let fx = fixture().await;
    refused_with_claim(&fx, |c| {
        c.as_object_mut().unwrap().remove("jti");
    })
    .await;
}

#[tokio::test]
async fn a_wrong_typ_is_refused() {
    let fx = fixture().await;
    for typ in [json!("JWT"), json!("id+jwt"), Value::Null] {
        let mut header = fx.keys.header();
        header["typ"] = typ;
        fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
    }
}

/// Tokens that point at a URL must never make the verifier fetch it.
async fn refused_without_fetching(fx: &Fixture, header_field: &str, value: impl FnOnce(&str) -> Value) {
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", trap.local_addr().unwrap());
    let mut header = fx.keys.header();
    header[header_field] = value(&url);
    fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
    let contacted = tokio::time::timeout(Duration::from_millis(300), trap.accept()).await;
    assert!(
        contacted.is_err(),
        "the verifier fetched a URL taken from a token ({header_field})"
    );
}

#[tokio::test]
async fn an_embedded_jwk_header_is_refused() {
    let fx = fixture().await;
    let stranger = foreign_key(Algorithm::RS256);
    let mut header = fx.keys.header();
    header["jwk"] = json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"});
    fx.assert_refused(&sign_raw_with(
        &stranger,
        &header.to_string(),
        &fx.claims().to_string(),
    ))
    .await;
}

#[tokio::test]
async fn a_jku_header_is_refused_and_never_fetched() {
    let fx = fixture().await;
    refused_without_fetching(&fx, "jku", |url| json!(url)).await;
}

#[tokio::test]
async fn an_x5u_header_is_refused_and_never_fetched() {
    let fx = fixture().await;
    refused_without_fetching(&fx, "x5u", |url| json!(url)).await;
}

#[tokio::test]
async fn an_x5c_header_is_refused() {
    let fx = fixture().await;
    refused_without_fetching(&fx, "x5c", |_| {
        json!(["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"])
    })
    .await;
}

#[tokio::test]
async fn any_crit_header_is_refused() {
    let fx = fixture().await;
    for crit in [json!(["exp"]), json!([]), json!(["b64"])] {
        let mut header = fx.keys.header();
        header["crit"] = crit;
        fx.assert_refused(&fx.keys.sign(&header, &fx.claims())).await;
    }
}

#[tokio::test]
async fn an_all_zero_es256_signature_is_refused() {
    let fx = fixture_with(Algorithm::ES256, |_| {}).await;
    assert_eq!(
        fx.verifier.verify(&fx.user.access).await.status(),
        200,
        "ES256 tokens work"
    );
    let zero = URL_SAFE_NO_PAD.encode([0u8; 64]);
    let token = format!("{}.{}.{zero}", encode(&fx.keys.header()), encode(&fx.claims()));
    fx.assert_refused(&token).await;
}

#[tokio::test]
async fn duplicate_claim_names_are_refused() {
    let fx = fixture().await;
    let claims = fx.claims().to_string();
    let other = uuid::Uuid::new_v4();
    let duplicated = claims.replacen('{', &format!("{{\"sub\":\"{other}\","), 1);
    fx.assert_refused(&fx.keys.sign_raw(&fx.keys.header().to_string(), &duplicated))
        .await;
}

#[tokio::test]
async fn padded_base64_is_refused() {
    let fx = fixture().await;
    let token = &fx.user.access;
    let (message, signature) = token.rsplit_once('.').unwrap();
    assert_ne!(
        signature.len() % 4,
        0,
        "an RS256 signature needs padding in padded base64"
    );
    let padding = "=".repeat(4 - signature.len() % 4);
    fx.assert_refused(&format!("{message}.{signature}{padding}"))
        .await;
}

#[tokio::test]
async fn the_standard_base64_alphabet_is_refused() {
    let fx = fixture().await;
    // Find a token whose signature has a character that differs between the two alphabets.
    for _ in 0..20 {
        let token = fx.keys.sign(&fx.keys.header(), &fx.claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let standard = STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).unwrap());
        let standard = standard.trim_end_matches('=');
        if standard != signature {
            assert_eq!(fx.verifier.verify(&token).await.status(), 200);
            fx.assert_refused(&format!("{message}.{standard}")).await;
            return;
        }
    }
    panic!("no signature used '-' or '_' in twenty tries");
}

#[tokio::test]
async fn altered_trailing_bits_are_refused() {
    let fx = fixture().await;
    let token = &fx.user.access;
    let (message, signature) = token.rsplit_once('.').unwrap();
    // 342 characters for 256 bytes: the last character carries 4 unused bits, which are zero.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = signature.as_bytes()[signature.len() - 1];
    let value = alphabet.iter().position(|&c| c == last).unwrap();
    let altered = alphabet[value | 1] as char;
    let token = format!("{message}.{}{altered}", &signature[..signature.len() - 1]);
    assert!(URL_SAFE_NO_PAD.decode(token.rsplit_once('.').unwrap().1).is_err());
    fx.assert_refused(&token).await;
}

#[tokio::test]
async fn an_oversized_token_is_refused() {
    let fx = fixture().await;
    let mut claims = fx.claims();
    claims["padding"] = json!("x".repeat(9000));
    fx.assert_refused(&fx.keys.sign(&fx.keys.header(), &claims)).await;
}

#[tokio::test]
async fn an_oversized_header_is_never_accepted() {
    let fx = fixture().await;
    let huge = format!("Bearer {}{}", fx.user.access, "A".repeat(200_000));
    let outcome = fx
        .verifier
        .verify_request("/")
        .header("authorization", huge)
        .send()
        .await;
    if let Ok(response) = outcome {
        assert!(response.status().is_client_error(), "{}", response.status());
    }
}

#[tokio::test]
async fn two_authorization_headers_are_refused() {
    let fx = fixture().await;
    let response = fx
        .verifier
        .verify_request("/")
        .header("authorization", format!("Bearer {}", fx.user.access))
        .header("authorization", format!("Bearer {}", fx.user.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_lowercase_bearer_scheme_is_accepted() {
    let fx = fixture().await;
    let response = fx
        .verifier
        .verify_request("/")
        .header("authorization", format!("bearer {}", fx.user.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_access_token_in_the_query_string_is_ignored() {
    let fx = fixture().await;
    let uri = format!("/?access_token={}", fx.user.access);
    let response = fx.verifier.verify_request(&uri).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"auth-platform\""
    );
}

#[tokio::test]
async fn a_token_claiming_more_than_the_issuers_lifetime_or_issued_in_the_future_is_refused() {
    let fx = fixture().await;
    let now = auth_core::revocation::unix_now();
    let mut decade = fx.claims();
    decade["exp"] = serde_json::json!(now + 10 * 365 * 86_400);
    fx.assert_refused(&fx.keys.sign(&fx.keys.header(), &decade)).await;
    let mut later = fx.claims();
    later["iat"] = serde_json::json!(now + 600);
    later["nbf"] = serde_json::json!(now - 10);
    fx.assert_refused(&fx.keys.sign(&fx.keys.header(), &later)).await;
    let metrics = fx.verifier.metrics().await;
    assert!(
        metrics.contains("verifier_rejections_total{reason=\"lifetime_too_long\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("verifier_rejections_total{reason=\"issued_in_future\"} 1"),
        "{metrics}"
    );
}
