//! Keys: loaded before ready, rotated without restarts, kept when the JWKS is unreachable.

use std::time::Duration;

use auth_server::keys::SigningKey;
use jsonwebtoken::Algorithm;
use platform_tests::keys::TestKeys;
use platform_tests::server::{TestServer, start};
use platform_tests::verifier::{start_verifier, verifier_settings};

use crate::support::{fixture, fixture_with, settings_for};

#[tokio::test]
async fn the_verifier_is_not_ready_until_keys_load() {
    let redis = platform_tests::test_redis();
    let closed = format!(
        "http://127.0.0.1:{}/.well-known/jwks.json",
        platform_tests::process::free_port()
    );
    let verifier = start_verifier(verifier_settings(&closed, &redis.url), false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ready = verifier
        .client
        .get(format!("{}/health/ready", verifier.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let report: serde_json::Value = ready.json().await.unwrap();
    let keys = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "keys")
        .unwrap();
    assert_eq!(keys["status"], "pending");
}

/// Restarts `server` at the same address with a new key that sorts last, so it signs.
async fn restart_with_a_new_key(server: TestServer, keys: &TestKeys) -> (TestServer, SigningKey) {
    let rotated = keys.rotate("2026-06-01", Algorithm::ES256);
    let (db, redis_url, listen) = (
        server.db.clone(),
        server.redis_url.clone(),
        server.url.replace("http://", ""),
    );
    server.stop().await;
    let dir = keys.dir();
    let restarted = start(db, &redis_url, |s| {
        s.keys_dir = Some(dir);
        s.listen = listen;
    })
    .await;
    (restarted, rotated)
}

#[tokio::test]
async fn a_newly_published_key_is_accepted_without_a_restart() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.jwks_refetch_cooldown = Duration::from_millis(100)
    })
    .await;
    assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
    let (server, rotated) = restart_with_a_new_key(fx.server, &fx.keys).await;
    let fresh = server.login(&fx.user).await;
    let header = fresh.access.split('.').next().unwrap();
    let header: serde_json::Value = {
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(header)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["kid"], rotated.kid.as_str(), "the new key signs");
    // The same verifier, never restarted, fetches the new key on first sight of its kid.
    assert_eq!(fx.verifier.verify(&fresh.access).await.status(), 200);
    assert_eq!(
        fx.verifier.verify(&fx.user.access).await.status(),
        200,
        "the old key stays published"
    );
}

/// A well-formed token signed by a key nobody publishes, under a `kid` never seen before.
fn junk_kid_token(header: &serde_json::Value, claims: &serde_json::Value) -> String {
    let stranger = platform_tests::keys::foreign_key(Algorithm::RS256);
    let mut header = header.clone();
    header["kid"] = serde_json::json!(stranger.kid);
    platform_tests::keys::sign_raw_with(&stranger, &header.to_string(), &claims.to_string())
}

#[tokio::test]
async fn unknown_kids_share_refetches_at_most_one_per_cooldown() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.jwks_refetch_cooldown = Duration::from_millis(500)
    })
    .await;
    let junk = || junk_kid_token(&fx.keys.header(), &fx.claims());
    let before = jwks_requests(&fx.server.metrics().await);
    let started = std::time::Instant::now();
    let tokens: Vec<String> = (0..20).map(|_| junk()).collect();
    futures_util::future::join_all(tokens.iter().map(|token| fx.assert_refused(token))).await;
    for _ in 0..10 {
        fx.assert_refused(&junk()).await;
    }
    let fetches = jwks_requests(&fx.server.metrics().await) - before;
    let cooldowns = started.elapsed().as_millis() / 500;
    assert!(
        fetches >= 1 && u128::from(fetches) <= cooldowns + 1,
        "{fetches} fetches in {cooldowns} cooldowns: unknown kids must not hammer the JWKS"
    );
}

#[tokio::test]
async fn a_new_key_is_accepted_at_first_sight_while_junk_kids_flood_the_refetch() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.jwks_refetch_cooldown = Duration::from_millis(500)
    })
    .await;
    let flood = {
        let (url, keys, claims) = (fx.verifier.url.clone(), fx.keys.header(), fx.claims());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let token = junk_kid_token(&keys, &claims);
                let _ = client
                    .get(format!("{url}/verify"))
                    .header("x-original-method", "GET")
                    .header("x-original-uri", "/")
                    .bearer_auth(token)
                    .send()
                    .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (server, rotated) = restart_with_a_new_key(fx.server, &fx.keys).await;
    let fresh = server.login(&fx.user).await;
    assert!(fresh.access.len() > 10 && !rotated.kid.is_empty());
    // Its first request waits for the next refetch and is validated again with what it brought.
    assert_eq!(fx.verifier.verify(&fresh.access).await.status(), 200);
    flood.abort();
}

fn jwks_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("auth_server_http_requests_total") && line.contains("/.well-known/jwks.json")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn the_last_good_keys_stay_in_use_when_the_jwks_is_unreachable() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.jwks_refresh_interval = Duration::from_millis(100)
    })
    .await;
    assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
    let verifier = fx.verifier;
    let user = fx.user;
    fx.server.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(verifier.verify(&user.access).await.status(), 200);
    let metrics = verifier.metrics().await;
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("verifier_key_fetch_failures_total"))
        .unwrap();
    assert_ne!(failures, "verifier_key_fetch_failures_total 0", "{metrics}");
    let ready = verifier
        .client
        .get(format!("{}/health/ready", verifier.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "keys already loaded stay good");
}

/// Writes the JWKS publishing `keys` to `path`, as a mounted ConfigMap would change.
fn write_jwks(path: &std::path::Path, keys: &TestKeys) {
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None).unwrap();
    std::fs::write(path, serde_json::to_vec(ring.jwks()).unwrap()).unwrap();
}

#[tokio::test]
async fn a_mounted_jwks_file_is_reloaded_when_it_changes() {
    let fx = fixture().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    write_jwks(file.path(), &fx.keys);
    let mut settings = settings_for(&fx.server, |_| {});
    settings.jwks_url = None;
    settings.jwks_path = Some(file.path().to_path_buf());
    let verifier = start_verifier(settings, true).await;
    assert_eq!(verifier.verify(&fx.user.access).await.status(), 200);

    let other = TestKeys::new(Algorithm::EdDSA);
    let token = other.sign(&other.header(), &fx.claims());
    assert_eq!(verifier.verify(&token).await.status(), 401);
    write_jwks(file.path(), &other);
    verifier
        .wait_for_status(&token, 200, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn key_age_and_index_size_are_exposed() {
    let fx = fixture().await;
    let metrics = fx.verifier.metrics().await;
    for name in [
        "verifier_keys 1",
        "verifier_keys_age_seconds",
        "verifier_revocation_index_entries 0",
        "verifier_revocation_index_lag_seconds",
    ] {
        assert!(metrics.contains(name), "missing {name}\n{metrics}");
    }
}

#[tokio::test]
async fn a_removed_key_takes_its_cached_tokens_with_it() {
    let fx = fixture().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    write_jwks(file.path(), &fx.keys);
    let mut settings = settings_for(&fx.server, |_| {});
    settings.jwks_url = None;
    settings.jwks_path = Some(file.path().to_path_buf());
    let verifier = start_verifier(settings, true).await;
    for _ in 0..3 {
        assert_eq!(verifier.verify(&fx.user.access).await.status(), 200, "cached");
    }
    // The key is withdrawn (compromised, or rotated out): its tokens stop passing, cached or not.
    write_jwks(file.path(), &TestKeys::new(Algorithm::ES256));
    verifier
        .wait_for_status(&fx.user.access, 401, Duration::from_secs(10))
        .await;
}
