//! Revocations made through the real server reach the verifier; Redis trouble fails closed.

use std::time::Duration;

use auth_core::revocation::{RedisKeys, Revocation, publish, snapshot, unix_now};
use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::{TestKeys, claims};
use platform_tests::redis::mark_restored;
use platform_tests::server::start;
use platform_tests::verifier::{start_verifier, verifier_settings};
use reqwest::Method;
use serde_json::json;
use token_verifier::settings::RevocationMode;
use uuid::Uuid;

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
    let response = fx.server.logout(&fx.user.access).await;
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
    fx.server.logout(&fx.user.access).await;
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
async fn redis_down_fails_closed_and_a_logout_meanwhile_changes_nothing_until_it_succeeds() {
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
    // Logging out while Redis is down is refused as a whole: an acknowledged logout is one every
    // sidecar can know about.
    let logout = server.logout(&user.access).await;
    assert_eq!(logout.status(), 503);

    redis.restart();
    verifier
        .wait_for_status(&user.access, 200, Duration::from_secs(10))
        .await;
    let logout = server.logout(&user.access).await;
    assert_eq!(logout.status(), 204);
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
    fx.server.logout(&fx.user.access).await;
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

#[tokio::test]
async fn a_late_sidecar_loads_a_long_stream_over_an_authenticated_connection() {
    // A password and a database other than 0, so the bulk reader's handshake is exercised.
    let redis = RedisServer::start();
    let mut admin = redis::Client::open(redis.url(5))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = TestKeys::new(Algorithm::RS256);
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None).unwrap();
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), serde_json::to_vec(ring.jwks()).unwrap()).unwrap();

    let token_with = |sub: Uuid, sid: Uuid, jti: Uuid| {
        let mut claims = claims(&sub.to_string(), &sid.to_string());
        claims["jti"] = json!(jti);
        keys.sign(&keys.header(), &claims)
    };
    let until = unix_now() + 900;
    let stream = RedisKeys::default().stream();
    let filler = async |conn: &mut redis::aio::MultiplexedConnection, count: usize| {
        let mut pipe = redis::pipe();
        for _ in 0..count {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("kind")
                .arg("jti")
                .arg("id")
                .arg(Uuid::new_v4().to_string())
                .arg("until")
                .arg(until)
                .ignore();
        }
        pipe.query_async::<()>(conn).await.unwrap();
    };
    let publish_one = async |conn: &mut redis::aio::MultiplexedConnection, revocation: Revocation| {
        publish(
            conn,
            &RedisKeys::default(),
            std::slice::from_ref(&revocation),
            Duration::from_secs(900),
        )
        .await
        .unwrap();
    };
    let (first, in_session, of_user, last, kept) = (
        token_with(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
        token_with(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
        token_with(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
        token_with(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
        token_with(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()),
    );
    let claims_of = |token: &str| {
        let payload = token.split('.').nth(1).unwrap();
        let json =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
        serde_json::from_slice::<auth_core::token::AccessClaims>(&json).unwrap()
    };
    publish_one(&mut admin, Revocation::token(claims_of(&first).jti, until)).await;
    filler(&mut admin, 2_500).await;
    publish_one(&mut admin, Revocation::session(claims_of(&in_session).sid, until)).await;
    filler(&mut admin, 2_500).await;
    let user = claims_of(&of_user);
    publish_one(&mut admin, Revocation::user(user.sub, user.iat, until)).await;
    publish_one(&mut admin, Revocation::token(claims_of(&last).jti, until)).await;
    mark_restored(&mut admin).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("s3cret")
        .query_async(&mut admin)
        .await
        .unwrap();

    let mut settings = verifier_settings(
        "http://127.0.0.1:9/unused",
        &redis.url(5).replace("redis://", "redis://:s3cret@"),
    );
    settings.jwks_url = None;
    settings.jwks_path = Some(jwks.path().to_path_buf());
    let verifier = start_verifier(settings, true).await;
    for (name, token) in [
        ("first", &first),
        ("session", &in_session),
        ("user", &of_user),
        ("last", &last),
    ] {
        assert_eq!(
            verifier.verify(token).await.status(),
            401,
            "{name} revocation loaded"
        );
    }
    assert_eq!(verifier.verify(&kept).await.status(), 200);
    assert!(
        verifier
            .metrics()
            .await
            .contains("verifier_revocation_index_entries 5004"),
        "every entry indexed"
    );
}

#[tokio::test]
async fn a_users_revocation_instant_never_moves_backwards() {
    let redis = platform_tests::test_redis();
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = RedisKeys::default();
    let user = Uuid::new_v4();
    let now = unix_now();
    let later = Revocation::user(user, now, now + 900);
    // A retry of an older revocation, or a slower replica's, arrives after the newer one.
    let older = Revocation::user(user, now - 100, now + 800);
    for revocation in [later, older] {
        publish(&mut conn, &keys, &[revocation], Duration::from_secs(900))
            .await
            .unwrap();
    }
    let key = keys.revoked(auth_core::revocation::RevocationKind::User, &user.to_string());
    let (before, ttl): (i64, i64) = redis::pipe()
        .get(&key)
        .ttl(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(before, now, "the later instant stays");
    assert!(ttl > 850, "the longer expiry stays ({ttl} s)");
}

/// A sidecar starts from the server's compact snapshot and reads only the stream after it. Proved
/// by emptying the stream once the snapshot covers it: a revocation only the snapshot still holds
/// is honoured, and so is one published after it (the stream's tail). A snapshot of another epoch
/// is never used: then only the stream counts (which, emptied by hand here, no longer holds the
/// first revocation — the test's own doing, not a state Redis reaches by itself).
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_starts_from_the_servers_snapshot_and_reads_only_the_stream_after_it() {
    let server = platform_tests::server::spawn_server_with(|settings| {
        settings.revocation_snapshot_interval = Duration::from_secs(3);
    })
    .await;
    let user = server.new_user().await;
    let (first, second, kept) = (
        server.login(&user).await,
        server.login(&user).await,
        server.login(&user).await,
    );
    assert_eq!(server.logout(&first.access).await.status(), 204);
    let keys = RedisKeys::default();
    let mut conn = server.redis().await;
    let stream_last = {
        let newest: redis::Value = redis::cmd("XREVRANGE")
            .arg(keys.stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        let redis::Value::Array(entries) = newest else {
            panic!("a reply")
        };
        let redis::Value::Array(entry) = &entries[0] else {
            panic!("an entry")
        };
        let redis::Value::BulkString(id) = &entry[0] else {
            panic!("an id")
        };
        String::from_utf8(id.clone()).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(keys.snapshot())
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some((_, last_id, _)) = stored.as_deref().and_then(snapshot::parse)
            && last_id == stream_last
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server wrote no snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Holding the writer's lease keeps the server from writing another snapshot meanwhile.
    let () = redis::cmd("SET")
        .arg(keys.snapshot_lease())
        .arg("test")
        .arg("PX")
        .arg(120_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XTRIM")
        .arg(keys.stream())
        .arg("MAXLEN")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(server.logout(&second.access).await.status(), 204);

    let sidecar = start_verifier(settings_for(&server, |_| {}), true).await;
    assert_eq!(
        sidecar.verify(&first.access).await.status(),
        401,
        "from the snapshot"
    );
    assert_eq!(
        sidecar.verify(&second.access).await.status(),
        401,
        "from the stream after it"
    );
    assert_eq!(sidecar.verify(&kept.access).await.status(), 200);

    let foreign = snapshot::encode(
        &auth_core::revocation::RevocationIndex::default(),
        "another-epoch",
        "0-0",
    );
    let () = redis::cmd("SET")
        .arg(keys.snapshot())
        .arg(foreign)
        .query_async(&mut conn)
        .await
        .unwrap();
    let other = start_verifier(settings_for(&server, |_| {}), true).await;
    assert_eq!(
        other.verify(&second.access).await.status(),
        401,
        "the stream is read in full"
    );
    assert_eq!(
        other.verify(&first.access).await.status(),
        200,
        "the snapshot of another epoch was not used"
    );
}
