//! The access-token contract as issued by the server, and its keys.

use std::time::Duration;

use auth_core::token::KeySet;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use platform_tests::server::{spawn_server, spawn_server_with};
use serde_json::Value;

use crate::support::{json, problem};

fn decode_segment(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap()).unwrap()
}

async fn jwks(server: &platform_tests::server::TestServer) -> (Value, KeySet) {
    let response = server
        .client
        .get(format!("{}/.well-known/jwks.json", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let text = response.text().await.unwrap();
    (
        serde_json::from_str(&text).unwrap(),
        KeySet::from_json(text.as_bytes()).unwrap(),
    )
}

#[tokio::test]
async fn access_tokens_follow_the_contract_and_verify_against_the_published_keys() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let header = decode_segment(&user.access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
    let claims = decode_segment(&user.access, 1);
    assert_eq!(claims["iss"], "http://localhost:8080");
    assert_eq!(claims["aud"], "auth-platform");
    assert_eq!(claims["sub"], user.id.as_str());
    assert_eq!(claims["sid"], user.session.as_str());
    assert_eq!(claims["email"], user.email.as_str());
    assert_eq!(claims["roles"], serde_json::json!(["user"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
    assert_eq!(claims["nbf"], claims["iat"]);
    assert!(claims["jti"].as_str().unwrap().len() == 36);

    let (document, keys) = jwks(&server).await;
    assert_eq!(document["keys"][0]["kid"], header["kid"]);
    assert_eq!(document["keys"][0]["use"], "sig");
    assert!(
        document["keys"][0].get("d").is_none(),
        "no private material is published"
    );
    assert_eq!(keys.len(), 1);
    let verified = crate::support::verified(&server, &user.access).await;
    assert_eq!(verified.claims.sub.to_string(), user.id);

    let discovery = json(
        server
            .client
            .get(format!("{}/.well-known/openid-configuration", server.url))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        discovery["jwks_uri"],
        "http://localhost:8080/.well-known/jwks.json"
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
}

#[tokio::test]
async fn es256_and_eddsa_are_selectable() {
    for (algorithm, kty) in [("ES256", "EC"), ("EdDSA", "OKP")] {
        let server = spawn_server_with(|s| s.ephemeral_key_algorithm = algorithm.to_owned()).await;
        let user = server.new_user().await;
        assert_eq!(decode_segment(&user.access, 0)["alg"], algorithm);
        let (document, _) = jwks(&server).await;
        assert_eq!(document["keys"][0]["kty"], kty);
        assert_eq!(
            json(server.get_auth("/api/auth/me", &user.access).await, 200).await["id"],
            user.id.as_str()
        );
    }
}

#[tokio::test]
async fn keys_come_from_a_directory_all_published_the_newest_signing() {
    let dir = tempfile::tempdir().unwrap();
    let keygen = |name: &str, algorithm: &str| {
        let pem =
            auth_server::keys::generate_pem(auth_server::keys::parse_algorithm(algorithm).unwrap()).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), pem).unwrap();
    };
    keygen("2026-01-01", "RS256");
    keygen("2026-06-01", "ES256");
    std::fs::write(dir.path().join("README.txt"), "not a key").unwrap();
    let path = dir.path().to_path_buf();

    let server = spawn_server_with(|s| s.keys_dir = Some(path.clone())).await;
    let (document, keys) = jwks(&server).await;
    assert_eq!(keys.len(), 2);
    let user = server.new_user().await;
    assert_eq!(
        decode_segment(&user.access, 0)["alg"],
        "ES256",
        "the file sorting last signs"
    );
    server.stop().await;

    let server = spawn_server_with(|s| {
        s.keys_dir = Some(path.clone());
        s.active_key = Some("2026-01-01".into());
    })
    .await;
    let user = server.new_user().await;
    let header = decode_segment(&user.access, 0);
    assert_eq!(header["alg"], "RS256");
    let rsa_kid = document["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .unwrap()["kid"]
        .clone();
    assert_eq!(
        header["kid"], rsa_kid,
        "kids are stable thumbprints across restarts"
    );
}

#[tokio::test]
async fn a_bad_keys_directory_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.pem"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let db = platform_tests::migrated_database().await;
    let redis = platform_tests::test_redis();
    let mut settings = platform_tests::server::test_settings(&db, &redis.url);
    settings.keys_dir = Some(dir.path().to_path_buf());
    let error = auth_server::startup::Application::build(settings)
        .await
        .err()
        .expect("a broken key is refused");
    assert!(error.to_string().contains("broken: not a usable"), "{error}");

    let empty = tempfile::tempdir().unwrap();
    let mut settings = platform_tests::server::test_settings(&db, &redis.url);
    settings.keys_dir = Some(empty.path().to_path_buf());
    let error = auth_server::startup::Application::build(settings)
        .await
        .err()
        .expect("no keys is refused");
    assert!(error.to_string().contains("no *.pem private keys"), "{error}");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = spawn_server_with(|s| {
        s.access_token_ttl = Duration::from_secs(1);
        s.token_leeway = Duration::ZERO;
    })
    .await;
    let user = server.new_user().await;
    assert_eq!(server.get_auth("/api/auth/me", &user.access).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    problem(server.get_auth("/api/auth/me", &user.access).await, 401).await;
}

#[tokio::test]
async fn bearer_tokens_are_read_strictly_from_one_authorization_header() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let me = || server.request(reqwest::Method::GET, "/api/auth/me");
    let lowercase = me()
        .header("authorization", format!("bearer {}", user.access))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase.status(), 200);
    let missing = me().send().await.unwrap();
    assert_eq!(
        missing.headers()["www-authenticate"],
        "Bearer realm=\"auth-platform\", error=\"invalid_token\""
    );
    problem(missing, 401).await;
    let garbage = me()
        .header("authorization", "Bearer garbage")
        .send()
        .await
        .unwrap();
    problem(garbage, 401).await;
    let twice = me()
        .header("authorization", format!("Bearer {}", user.access))
        .header("authorization", format!("Bearer {}", user.access))
        .send()
        .await
        .unwrap();
    problem(twice, 401).await;
    let query = server
        .request(
            reqwest::Method::GET,
            &format!("/api/auth/me?access_token={}", user.access),
        )
        .send()
        .await
        .unwrap();
    problem(query, 401).await;
    let tampered = format!("{}x", &user.access[..user.access.len() - 1]);
    problem(server.get_auth("/api/auth/me", &tampered).await, 401).await;
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("auth_server_token_rejections_total{reason=\"malformed\"}"),
        "{metrics}"
    );
}
