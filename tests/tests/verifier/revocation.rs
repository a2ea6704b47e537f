//! Revocations made through the real server reach the verifier; Redis trouble fails closed.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::TestKeys;
use platform_tests::server::start;
use platform_tests::verifier::start_verifier;
use reqwest::Method;
use serde_json::json;
use token_verifier::settings::RevocationMode;

use crate::support::{fixture, fixture_with, settings_for};

const BOUND: Duration = Duration::from_secs(5);

#[tokio::test]
async fn logout_is_honoured_by_the_sidecar() {
    let fx = fixture().await;
    assert_eq!(
        fx.verifier.verify(&fx.user.access).await.status(),
        200,
        "verified and cached"
    );
    let response = fx
        .server
        .post_auth("/api/auth/logout", &fx.user.access, &json!({}))
        .await;
    assert_eq!(response.status(), 204);
    let took = fx.verifier.wait_for_status(&fx.user.access, 401, BOUND).await;
    println!("logout propagation (answered → rejected): {took:?}");
    assert!(
        fx.verifier
            .metrics()
            .await
            .contains("verifier_rejections_total{reason=\"revoked_jti\"}")
    );
}

#[tokio::test]
async fn logout_all_is_honoured_by_the_sidecar() {
    let fx = fixture().await;
    let phone = fx.server.login(&fx.user).await;
    assert_eq!(fx.verifier.verify(&phone.access).await.status(), 200);
    fx.server
        .post_auth("/api/auth/logout-all", &fx.user.access, &json!({}))
        .await;
    fx.verifier.wait_for_status(&fx.user.access, 401, BOUND).await;
    fx.verifier.wait_for_status(&phone.access, 401, BOUND).await;
    let fresh = fx.server.login(&fx.user).await;
    assert_eq!(
        fx.verifier.verify(&fresh.access).await.status(),
        200,
        "a later login is not revoked"
    );
}

#[tokio::test]
async fn a_revoked_session_is_honoured_by_the_sidecar() {
    let fx = fixture().await;
    let phone = fx.server.login(&fx.user).await;
    assert_eq!(fx.verifier.verify(&phone.access).await.status(), 200);
    let path = format!("/api/auth/sessions/{}", phone.session);
    let revoked = fx
        .server
        .request(Method::DELETE, &path)
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    fx.verifier.wait_for_status(&phone.access, 401, BOUND).await;
    assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
}

#[tokio::test]
async fn the_per_request_lookup_mode_sees_revocations_at_once() {
    let fx = fixture_with(Algorithm::RS256, |s| s.revocation_mode = RevocationMode::Lookup).await;
    assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
    fx.server
        .post_auth("/api/auth/logout", &fx.user.access, &json!({}))
        .await;
    assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 401);
}

#[tokio::test]
async fn the_index_needs_no_redis_round_trip_per_request() {
    let fx = fixture().await;
    let mut redis = fx.server.redis().await;
    let calls = async |redis: &mut redis::aio::MultiplexedConnection| -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(redis)
            .await
            .unwrap();
        info.lines()
            .filter(|line| line.starts_with("cmdstat_"))
            .map(|line| {
                line.split("calls=")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    let before = calls(&mut redis).await;
    for _ in 0..200 {
        assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
    }
    let after = calls(&mut redis).await;
    // The follower's blocking read returns about once a second; 200 verifications add nothing.
    assert!(
        after - before < 20,
        "{} Redis commands for 200 verifications",
        after - before
    );
}

#[tokio::test]
async fn redis_down_fails_closed_and_revocations_made_meanwhile_are_honoured() {
    let keys = TestKeys::new(Algorithm::RS256);
    let mut redis = RedisServer::start();
    let db = platform_tests::migrated_database().await;
    let dir = keys.dir();
    let server = start(db, &redis.url(0), |s| {
        s.keys_dir = Some(dir);
        s.revocation_resync_interval = Duration::from_millis(200);
        s.dependency_timeout = Duration::from_millis(300);
    })
    .await;
    let user = server.new_user().await;
    let verifier = start_verifier(
        settings_for(&server, |s| s.redis_grace = Duration::from_millis(500)),
        true,
    )
    .await;
    assert_eq!(verifier.verify(&user.access).await.status(), 200);

    redis.kill();
    verifier.wait_for_status(&user.access, 503, BOUND).await;
    let response = verifier.verify(&user.access).await;
    assert_eq!(response.headers()["retry-after"], "1");
    // Logging out while Redis is down: PostgreSQL checks the token and records the revocation;
    // the server publishes it once Redis is back.
    let logout = server
        .post_auth("/api/auth/logout", &user.access, &json!({}))
        .await;
    assert_eq!(logout.status(), 204);

    redis.restart();
    verifier
        .wait_for_status(&user.access, 401, Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn fail_open_accepts_valid_tokens_when_configured() {
    let keys = TestKeys::new(Algorithm::RS256);
    let mut redis = RedisServer::start();
    let db = platform_tests::migrated_database().await;
    let dir = keys.dir();
    let server = start(db, &redis.url(0), |s| s.keys_dir = Some(dir)).await;
    let user = server.new_user().await;
    let verifier = start_verifier(
        settings_for(&server, |s| {
            s.redis_grace = Duration::from_millis(300);
            s.fail_open = true;
        }),
        true,
    )
    .await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(verifier.verify(&user.access).await.status(), 200);
    assert!(verifier.metrics().await.contains("verifier_failed_open_total 1"));
    verifier
        .verify("garbage")
        .await
        .status()
        .eq(&401)
        .then_some(())
        .expect("bad tokens stay refused");
}

#[tokio::test]
async fn a_flushed_redis_restored_by_the_server_revives_nothing() {
    let fx = fixture().await;
    fx.server
        .post_auth("/api/auth/logout", &fx.user.access, &json!({}))
        .await;
    fx.verifier.wait_for_status(&fx.user.access, 401, BOUND).await;
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut fx.server.redis().await)
        .await
        .unwrap();
    assert_eq!(
        fx.verifier.verify(&fx.user.access).await.status(),
        401,
        "the running index remembers"
    );

    // A verifier starting after the server restored the stream learns the revocation too.
    let mut redis = fx.server.redis().await;
    for _ in 0..100 {
        let length: u64 = redis::cmd("XLEN")
            .arg("auth:revocations")
            .query_async(&mut redis)
            .await
            .unwrap();
        if length >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = start_verifier(settings_for(&fx.server, |_| {}), true).await;
    assert_eq!(late.verify(&fx.user.access).await.status(), 401);
}
