//! Refresh rotation, reuse detection, logout and the durability of revocations.

use std::time::Duration;

use auth_core::revocation::{LookupOutcome, RedisKeys, RevocationKind, lookup};
use platform_tests::server::{TestServer, TestUser, spawn_server, spawn_server_with, start};
use serde_json::{Value, json};

use crate::support::{audit_events, db, json, problem, verified};

async fn refresh(server: &TestServer, token: &str) -> reqwest::Response {
    server
        .post("/api/auth/refresh", &json!({ "refresh_token": token }))
        .await
}

/// What auth-core's per-request revocation check (the verifier's fallback mode) says.
async fn revoked_by(server: &TestServer, token: &str) -> LookupOutcome {
    let verified = verified(server, token).await;
    lookup(&mut server.redis().await, &RedisKeys::default(), &verified)
        .await
        .unwrap()
}

async fn stream_entries(server: &TestServer) -> Vec<Value> {
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("auth:revocations")
        .arg("-")
        .arg("+")
        .query_async(&mut server.redis().await)
        .await
        .unwrap();
    entries
        .ids
        .iter()
        .map(|entry| {
            let fields: std::collections::HashMap<String, String> = entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref::<String>(v).unwrap()))
                .collect();
            serde_json::to_value(fields).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn refresh_rotates_and_the_old_token_stops_working() {
    let server = spawn_server_with(|s| s.refresh_reuse_grace = Duration::ZERO).await;
    let user = server.new_user().await;
    let body = json(refresh(&server, &user.refresh).await, 200).await;
    let rotated = body["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, user.refresh);
    assert_eq!(body["session"]["id"], user.session.as_str(), "same session");
    let access = body["tokens"]["access_token"].as_str().unwrap();
    assert_eq!(
        json(server.get_auth("/api/auth/me", access).await, 200).await["id"],
        user.id.as_str()
    );
    let next = json(refresh(&server, &rotated).await, 200).await;
    assert_ne!(next["tokens"]["refresh_token"], body["tokens"]["refresh_token"]);
    assert!(
        server
            .metrics()
            .await
            .contains("auth_server_refreshes_total{result=\"rotated\"} 2")
    );
}

#[tokio::test]
async fn presenting_the_parent_again_within_the_grace_window_returns_the_same_child() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let (first, second) = tokio::join!(refresh(&server, &user.refresh), refresh(&server, &user.refresh));
    let first = json(first, 200).await;
    let second = json(second, 200).await;
    assert_eq!(
        first["tokens"]["refresh_token"], second["tokens"]["refresh_token"],
        "never a second branch"
    );
    let third = json(refresh(&server, &user.refresh).await, 200).await;
    assert_eq!(third["tokens"]["refresh_token"], first["tokens"]["refresh_token"]);
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(children, 1);
    // The child keeps working.
    let child = first["tokens"]["refresh_token"].as_str().unwrap();
    json(refresh(&server, child).await, 200).await;
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_session() {
    let server = spawn_server_with(|s| s.refresh_reuse_grace = Duration::ZERO).await;
    let user = server.new_user().await;
    let rotated = json(refresh(&server, &user.refresh).await, 200).await;
    let child_refresh = rotated["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    let child_access = rotated["tokens"]["access_token"].as_str().unwrap().to_owned();

    // An attacker replays the stolen original.
    problem(refresh(&server, &user.refresh).await, 401).await;

    problem(refresh(&server, &child_refresh).await, 401).await;
    problem(server.get_auth("/api/auth/me", &child_access).await, 401).await;
    assert_eq!(
        revoked_by(&server, &child_access).await,
        LookupOutcome::Revoked(RevocationKind::Session)
    );
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM sessions")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(reason, "refresh_token_reuse");
    assert!(
        audit_events(&server)
            .await
            .contains(&"refresh_token_reused".to_owned())
    );
    assert!(
        server
            .metrics()
            .await
            .contains("auth_server_refreshes_total{result=\"reused\"} 1")
    );
}

#[tokio::test]
async fn a_grandparent_is_theft_even_within_the_grace_window() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let child = json(refresh(&server, &user.refresh).await, 200).await;
    let child = child["tokens"]["refresh_token"].as_str().unwrap().to_owned();
    let grandchild = json(refresh(&server, &child).await, 200).await;
    problem(refresh(&server, &user.refresh).await, 401).await;
    let grandchild = grandchild["tokens"]["refresh_token"].as_str().unwrap();
    problem(refresh(&server, grandchild).await, 401).await;
}

#[tokio::test]
async fn unknown_or_malformed_refresh_tokens_are_401() {
    let server = spawn_server().await;
    server.new_user().await;
    for token in ["", "garbage", &"A".repeat(43), &"A".repeat(4000)] {
        problem(refresh(&server, token).await, 401).await;
    }
    problem(server.post("/api/auth/refresh", &json!({})).await, 401).await;
}

#[tokio::test]
async fn the_refresh_token_can_live_in_an_http_only_cookie() {
    let server =
        spawn_server_with(|s| s.refresh_token_delivery = auth_server::settings::RefreshDelivery::Cookie)
            .await;
    let response = server
        .post(
            "/api/auth/register",
            &json!({"email": "c@example.com", "password": "correct horse battery"}),
        )
        .await;
    let cookie = response.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/auth",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let body = json(response, 201).await;
    assert!(
        body["tokens"].get("refresh_token").is_none(),
        "not readable by scripts"
    );
    let value = cookie.split(';').next().unwrap().to_owned();

    let refreshed = server
        .request(reqwest::Method::POST, "/api/auth/refresh")
        .header("cookie", &value)
        .send()
        .await
        .unwrap();
    assert!(
        refreshed.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("refresh_token=")
    );
    let body = json(refreshed, 200).await;
    let access = body["tokens"]["access_token"].as_str().unwrap();
    let logout = server.logout(access).await;
    assert_eq!(logout.status(), 204);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn logout_revokes_this_token_and_session_everywhere() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let other = server.login(&user).await;
    assert_eq!(revoked_by(&server, &user.access).await, LookupOutcome::Clear);

    assert_eq!(server.logout(&user.access).await.status(), 204);
    problem(server.get_auth("/api/auth/me", &user.access).await, 401).await;
    assert_eq!(
        revoked_by(&server, &user.access).await,
        LookupOutcome::Revoked(RevocationKind::Token)
    );
    problem(refresh(&server, &user.refresh).await, 401).await;
    assert_eq!(
        server.get_auth("/api/auth/me", &other.access).await.status(),
        200,
        "other sessions live on"
    );

    let mut redis = server.redis().await;
    let claims = verified(&server, &user.access).await.claims;
    let jti_ttl: i64 = redis::cmd("TTL")
        .arg(format!("auth:revoked:jti:{}", claims.jti))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(
        (900..=930).contains(&jti_ttl),
        "the jti key lives until the token expires: {jti_ttl}"
    );
    let sid_ttl: i64 = redis::cmd("TTL")
        .arg(format!("auth:revoked:sid:{}", claims.sid))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((900..=930).contains(&sid_ttl), "{sid_ttl}");
    let mirror: bool = redis::cmd("EXISTS")
        .arg(format!("auth:session:{}", claims.sid))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!mirror, "the session mirror is gone");

    let kinds: Vec<Value> = stream_entries(&server)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("jti"), json!("sid")]);
    let durable: i64 = sqlx::query_scalar("SELECT count(*) FROM revoked_tokens WHERE kind IN ('jti', 'sid')")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(durable, 2);
}

#[tokio::test]
async fn logout_all_revokes_every_session_and_token_of_the_user() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let phone = server.login(&user).await;
    let stranger = server.new_user().await;
    assert_eq!(
        server
            .post_auth("/api/auth/logout-all", &phone.access, &json!({}))
            .await
            .status(),
        204
    );
    for session in [&user, &phone] {
        problem(server.get_auth("/api/auth/me", &session.access).await, 401).await;
        // Each ended session by `sid`, and the user's earlier tokens by instant.
        assert_eq!(
            revoked_by(&server, &session.access).await,
            LookupOutcome::Revoked(RevocationKind::Session)
        );
        problem(refresh(&server, &session.refresh).await, 401).await;
    }
    let before: i64 = redis::cmd("GET")
        .arg(format!("auth:revoked:user:{}", user.id))
        .query_async(&mut server.redis().await)
        .await
        .unwrap();
    assert!((auth_core::revocation::unix_now() - before).abs() < 60);
    assert_eq!(
        server.get_auth("/api/auth/me", &stranger.access).await.status(),
        200
    );
    // A login right after (even within the same second) is not covered by the revocation.
    let fresh = server.login(&user).await;
    assert_eq!(server.get_auth("/api/auth/me", &fresh.access).await.status(), 200);
    let live: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND user_id = $1::uuid")
            .bind(&user.id)
            .fetch_one(&mut db(&server).await)
            .await
            .unwrap();
    assert_eq!(live, 1);
}

async fn revoke_and_flush(server: &TestServer) -> (TestUser, TestUser) {
    let logged_out = server.new_user().await;
    let everywhere = server.new_user().await;
    assert_eq!(server.logout(&logged_out.access).await.status(), 204);
    assert_eq!(
        server
            .post_auth("/api/auth/logout-all", &everywhere.access, &json!({}))
            .await
            .status(),
        204
    );
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut server.redis().await)
        .await
        .unwrap();
    (logged_out, everywhere)
}

#[tokio::test]
async fn a_flushed_redis_is_restored_from_postgres_at_start() {
    // Keys that survive the restart, as a mounted Secret would.
    let keys = tempfile::tempdir().unwrap();
    let pem = auth_server::keys::generate_pem(jsonwebtoken::Algorithm::RS256).unwrap();
    std::fs::write(keys.path().join("key.pem"), pem).unwrap();
    let keys_dir = keys.path().to_path_buf();
    let server = spawn_server_with(|s| {
        s.revocation_resync_interval = Duration::from_secs(3600);
        s.revocation_watch_interval = Duration::from_secs(3600);
        s.keys_dir = Some(keys_dir.clone());
    })
    .await;
    let (logged_out, everywhere) = revoke_and_flush(&server).await;
    assert_eq!(
        revoked_by(&server, &logged_out.access).await,
        LookupOutcome::Unknown,
        "the flush erased the revocation and the epoch: an absent key proves nothing"
    );
    problem(server.get_auth("/api/auth/me", &logged_out.access).await, 401).await;
    let (db, redis_url) = (server.db.clone(), server.redis_url.clone());
    server.stop().await;

    let restarted = start(db, &redis_url, |s| s.keys_dir = Some(keys_dir)).await;
    assert_eq!(
        revoked_by(&restarted, &logged_out.access).await,
        LookupOutcome::Revoked(RevocationKind::Token)
    );
    assert_eq!(
        revoked_by(&restarted, &everywhere.access).await,
        LookupOutcome::Revoked(RevocationKind::Session)
    );
    problem(restarted.get_auth("/api/auth/me", &logged_out.access).await, 401).await;
    problem(restarted.get_auth("/api/auth/me", &everywhere.access).await, 401).await;
    let kinds: Vec<Value> = stream_entries(&restarted)
        .await
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(
        kinds.len(),
        4,
        "restored revocations (jti and sid of the logout, sid and user of the logout-all) are on \
         the stream again: {kinds:?}"
    );
}

#[tokio::test]
async fn a_running_server_restores_a_flushed_redis_at_once() {
    // Not the periodic re-check: the guard sees the epoch gone.
    let server = spawn_server_with(|s| s.revocation_resync_interval = Duration::from_secs(3600)).await;
    let (logged_out, _) = revoke_and_flush(&server).await;
    let flushed = std::time::Instant::now();
    while flushed.elapsed() < Duration::from_secs(5) {
        if revoked_by(&server, &logged_out.access).await == LookupOutcome::Revoked(RevocationKind::Token) {
            println!("flush -> restored: {:?}", flushed.elapsed());
            assert!(
                server
                    .metrics()
                    .await
                    .contains("auth_server_revocation_restores_total{trigger=\"state_lost\"} 1")
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the revocation never came back");
}
