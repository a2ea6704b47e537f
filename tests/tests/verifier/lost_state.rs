//! Redis losing the revocation state (a flush, a restart without persistence, an empty replica)
//! never brings a revoked token back, whichever sidecar asks and whenever it starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use auth_core::revocation::RedisKeys;
use auth_core::revocation::epoch::{self, Epoch, RestoreClaim};
use jsonwebtoken::Algorithm;
use platform_tests::keys::TestKeys;
use platform_tests::server::{TestServer, TestUser, start};
use platform_tests::verifier::{TestVerifier, start_verifier};
use platform_tests::{RedisServer, migrated_database, test_redis};
use token_verifier::settings::RevocationMode;

use crate::support::settings_for;

const BOUND: Duration = Duration::from_secs(10);

async fn flush(server: &TestServer) {
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut server.redis().await)
        .await
        .unwrap();
}

async fn logged_out(server: &TestServer) -> TestUser {
    let user = server.new_user().await;
    let response = server.logout(&user.access).await;
    assert_eq!(response.status(), 204);
    user
}

async fn ready_status(verifier: &TestVerifier) -> u16 {
    verifier
        .client
        .get(format!("{}/health/ready", verifier.admin_url))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A server on a new migrated database (see [`server_on`]).
async fn fresh_server(redis_url: &str, keys: &TestKeys, watch: Duration) -> TestServer {
    server_on(migrated_database().await, redis_url, keys, watch).await
}

/// A server on `db`/`redis_url` with keys from `keys`; `watch` is how often it looks at Redis.
async fn server_on(
    db: platform_tests::TestDatabase,
    redis_url: &str,
    keys: &TestKeys,
    watch: Duration,
) -> TestServer {
    let dir = keys.dir();
    start(db, redis_url, |s| {
        s.keys_dir = Some(dir);
        s.revocation_resync_interval = Duration::from_secs(3600);
        s.revocation_watch_interval = watch;
    })
    .await
}

#[tokio::test]
async fn a_sidecar_started_after_a_flush_waits_for_the_restore_and_never_accepts_a_revoked_token() {
    let keys = TestKeys::new(Algorithm::RS256);
    let redis = test_redis();
    // This server never notices the flush: only a later restore may make a sidecar ready.
    let blind = fresh_server(&redis.url, &keys, Duration::from_secs(3600)).await;
    let revoked = logged_out(&blind).await;
    let valid = blind.new_user().await;
    flush(&blind).await;

    for mode in [RevocationMode::Index, RevocationMode::Lookup] {
        let sidecar = start_verifier(settings_for(&blind, |s| s.revocation_mode = mode), false).await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            // Keys load within milliseconds; the revocation state never does.
            assert_eq!(sidecar.verify(&revoked.access).await.status(), 503, "{mode:?}");
            assert_eq!(sidecar.verify(&valid.access).await.status(), 503, "{mode:?}");
            assert_eq!(ready_status(&sidecar).await, 503, "{mode:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A server that restores: every sidecar becomes ready on the restored state.
    let db = blind.db.clone();
    let restorer = server_on(db, &redis.url, &keys, Duration::from_millis(250)).await;
    let flushed = Instant::now();
    flush(&restorer).await;
    let sidecar = start_verifier(settings_for(&restorer, |_| {}), false).await;
    let mut answers = Vec::new();
    while ready_status(&sidecar).await != 200 {
        answers.push(sidecar.verify(&revoked.access).await.status().as_u16());
        assert!(flushed.elapsed() < BOUND, "never ready: {answers:?}");
    }
    println!(
        "flush -> new sidecar ready: {:?} ({} requests meanwhile)",
        flushed.elapsed(),
        answers.len()
    );
    assert!(
        answers.iter().all(|status| *status == 503 || *status == 401),
        "{answers:?}"
    );
    assert_eq!(sidecar.verify(&revoked.access).await.status(), 401);
    assert_eq!(sidecar.verify(&valid.access).await.status(), 200);
}

#[tokio::test]
async fn a_running_sidecar_fails_closed_when_the_state_stays_lost_and_recovers_with_the_restore() {
    let keys = TestKeys::new(Algorithm::RS256);
    let redis = test_redis();
    let blind = fresh_server(&redis.url, &keys, Duration::from_secs(3600)).await;
    let valid = blind.new_user().await;
    let sidecar = start_verifier(
        settings_for(&blind, |s| s.redis_grace = Duration::from_millis(500)),
        true,
    )
    .await;
    assert_eq!(sidecar.verify(&valid.access).await.status(), 200);
    flush(&blind).await;
    // Revoked after the flush, before any restore: the running index still learns it.
    let revoked = logged_out(&blind).await;
    sidecar.wait_for_status(&valid.access, 503, BOUND).await;
    assert_eq!(sidecar.verify(&revoked.access).await.status(), 503);
    assert_eq!(ready_status(&sidecar).await, 503);

    let restorer = server_on(blind.db.clone(), &redis.url, &keys, Duration::from_millis(250)).await;
    sidecar.wait_for_status(&valid.access, 200, BOUND).await;
    assert_eq!(sidecar.verify(&revoked.access).await.status(), 401);
    assert_eq!(ready_status(&sidecar).await, 200);
    assert!(
        sidecar
            .metrics()
            .await
            .contains("verifier_revocation_index_loads 2"),
        "the rebuilt stream is loaded again"
    );
    drop(restorer);
}

#[tokio::test]
async fn a_flush_during_a_restore_is_noticed_and_the_restore_runs_again() {
    let keys = TestKeys::new(Algorithm::RS256);
    let redis = test_redis();
    let server = fresh_server(&redis.url, &keys, Duration::from_millis(50)).await;
    // Enough revocations that a restore takes a while, the real one written last.
    sqlx::query(
        "INSERT INTO revoked_tokens (kind, value, expires_at, reason) \
         SELECT 'jti', gen_random_uuid()::text, now() + interval '15 minutes', 'test' \
         FROM generate_series(1, 30000)",
    )
    .execute(&server.db.pool().await)
    .await
    .unwrap();
    let revoked = logged_out(&server).await;
    let mut conn = server.redis().await;
    let keys_of = RedisKeys::default();

    flush(&server).await;
    // Wait for the restore to be under way, then flush again in the middle of it.
    let started = Instant::now();
    loop {
        if let Epoch::Restoring(_) = epoch::read(&mut conn, &keys_of).await.unwrap() {
            break;
        }
        assert!(started.elapsed() < BOUND, "no restore started");
    }
    flush(&server).await;
    let restored = loop {
        if let Epoch::Complete(token) = epoch::read(&mut conn, &keys_of).await.unwrap() {
            break token;
        }
        assert!(started.elapsed() < BOUND, "never restored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let length: usize = redis::cmd("XLEN")
        .arg(keys_of.stream())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        length >= 30_002,
        "the committed epoch covers every revocation ({length} entries)"
    );
    let sidecar = start_verifier(settings_for(&server, |_| {}), true).await;
    assert_eq!(sidecar.verify(&revoked.access).await.status(), 401);
    assert_eq!(
        epoch::read(&mut conn, &keys_of).await.unwrap(),
        Epoch::Complete(restored)
    );
}

#[tokio::test]
async fn the_restore_protocol_survives_every_interleaving() {
    let redis = test_redis();
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys = RedisKeys::default();
    let claim = async |conn: &mut redis::aio::MultiplexedConnection, replace: Option<&str>| {
        match epoch::begin_restore(conn, &keys, replace).await.unwrap() {
            RestoreClaim::Restore(token) => token,
            RestoreClaim::Intact(epoch) => panic!("intact at {epoch}"),
        }
    };

    // Two servers restoring at once share one token, and both commits succeed.
    let first = claim(&mut conn, None).await;
    assert_eq!(claim(&mut conn, None).await, first, "the second server joins");
    assert_eq!(
        epoch::read(&mut conn, &keys).await.unwrap(),
        Epoch::Restoring(first.clone())
    );
    assert!(epoch::commit_restore(&mut conn, &keys, &first).await.unwrap());
    assert!(epoch::commit_restore(&mut conn, &keys, &first).await.unwrap());
    assert_eq!(
        epoch::begin_restore(&mut conn, &keys, None).await.unwrap(),
        RestoreClaim::Intact(first.clone())
    );

    // A flush between the claim and the commit: the commit fails, nothing claims completeness.
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let second = claim(&mut conn, None).await;
    assert_ne!(second, first, "every restore has a new token");
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    assert!(!epoch::commit_restore(&mut conn, &keys, &second).await.unwrap());
    assert_eq!(epoch::read(&mut conn, &keys).await.unwrap(), Epoch::Missing);

    // A restore that replaced a stale one wins; the stale one's commit fails.
    let stale = claim(&mut conn, None).await;
    assert!(epoch::commit_restore(&mut conn, &keys, &stale).await.unwrap());
    let fresh = claim(&mut conn, Some(&stale)).await;
    assert!(!epoch::commit_restore(&mut conn, &keys, &stale).await.unwrap());
    assert!(epoch::commit_restore(&mut conn, &keys, &fresh).await.unwrap());
    // Replacing an epoch that is no longer there changes nothing.
    assert_eq!(
        epoch::begin_restore(&mut conn, &keys, Some(&stale))
            .await
            .unwrap(),
        RestoreClaim::Intact(fresh)
    );
}

#[tokio::test]
async fn two_servers_restore_a_flushed_redis_together() {
    let keys = TestKeys::new(Algorithm::RS256);
    let redis = test_redis();
    let one = fresh_server(&redis.url, &keys, Duration::from_millis(20)).await;
    let two = server_on(one.db.clone(), &redis.url, &keys, Duration::from_millis(20)).await;
    let revoked = logged_out(&one).await;
    for _ in 0..5 {
        flush(&one).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let sidecar = start_verifier(settings_for(&two, |_| {}), true).await;
    assert_eq!(sidecar.verify(&revoked.access).await.status(), 401);
}

#[tokio::test]
async fn redis_restarted_empty_under_load_revives_no_revoked_token() {
    let keys = TestKeys::new(Algorithm::RS256);
    let mut redis = RedisServer::start();
    let server = fresh_server(&redis.url(0), &keys, Duration::from_millis(250)).await;
    let mut revoked = Vec::new();
    for _ in 0..5 {
        revoked.push(logged_out(&server).await.access);
    }
    let valid = server.new_user().await;
    let quick = |s: &mut token_verifier::settings::Settings| s.redis_grace = Duration::from_millis(500);
    let running = Arc::new(vec![
        start_verifier(settings_for(&server, quick), true).await,
        start_verifier(
            settings_for(&server, |s| s.revocation_mode = RevocationMode::Lookup),
            true,
        )
        .await,
    ]);
    // Load: every revoked token, over and over, on every sidecar.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (running, stop, revoked) = (running.clone(), stop.clone(), revoked.clone());
        tokio::spawn(async move {
            let mut answers = std::collections::BTreeMap::<u16, usize>::new();
            while !stop.load(Ordering::Relaxed) {
                for sidecar in running.iter() {
                    for token in &revoked {
                        *answers
                            .entry(sidecar.verify(token).await.status().as_u16())
                            .or_default() += 1;
                    }
                }
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.restart();
    // A sidecar started right after, as on a rollout.
    let late = start_verifier(settings_for(&server, quick), false).await;
    let started = Instant::now();
    while ready_status(&late).await != 200 {
        for token in &revoked {
            assert_ne!(late.verify(token).await.status(), 200);
        }
        assert!(started.elapsed() < BOUND, "the late sidecar never became ready");
    }
    for sidecar in running.iter().chain([&late]) {
        sidecar.wait_for_status(&valid.access, 200, BOUND).await;
        for token in &revoked {
            assert_eq!(sidecar.verify(token).await.status(), 401);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let answers = load.await.unwrap();
    println!("answers to revoked tokens during the restart: {answers:?}");
    assert!(!answers.contains_key(&200), "{answers:?}");
    assert!(answers[&401] > 0);
}

#[tokio::test]
async fn redis_restarted_from_an_older_snapshot_is_restored_under_a_new_epoch() {
    let keys = TestKeys::new(Algorithm::RS256);
    let mut redis = RedisServer::start();
    let server = fresh_server(&redis.url(0), &keys, Duration::from_millis(100)).await;
    let mut conn = server.redis().await;
    let names = RedisKeys::default();
    let before = epoch::read(&mut conn, &names).await.unwrap();
    assert!(before.complete().is_some());
    // A snapshot with the epoch, then a revocation the snapshot lacks.
    let _: () = redis::cmd("SET")
        .arg("from-the-snapshot")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SAVE").query_async(&mut conn).await.unwrap();
    let revoked = logged_out(&server).await;
    redis.restart();

    let mut conn = server.redis().await;
    let loaded: bool = redis::cmd("EXISTS")
        .arg("from-the-snapshot")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(loaded, "the restarted Redis loaded the older snapshot");
    let started = Instant::now();
    while epoch::read(&mut conn, &names).await.unwrap() == before {
        assert!(started.elapsed() < BOUND, "the old epoch was never replaced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("restart -> old epoch replaced: {:?}", started.elapsed());
    let sidecar = start_verifier(settings_for(&server, |_| {}), true).await;
    sidecar.wait_for_status(&revoked.access, 401, BOUND).await;
    assert!(
        server
            .metrics()
            .await
            .contains("auth_server_revocation_restores_total{trigger=\"redis_replaced\"} 1")
    );
}

/// After a failover the new primary may lack the newest entries the old one had, and its clock may
/// be behind, so its next entry ids sort before the follower's position: resuming there would
/// skip them for good. The follower notices that the stream no longer holds its last entry and
/// reads the stream again. Simulated exactly: the same epoch (replicated), the newest entry
/// missing, and a new revocation with an id below the follower's position.
#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_position_the_new_primary_lacks_reads_the_stream_again() {
    use auth_core::revocation::{
        FollowerStatus, Revocation, RevocationIndex, StreamFollower, publish, unix_now,
    };
    let mut redis = RedisServer::start();
    let url = redis.url(0);
    let connect = async || {
        redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    };
    let keys = RedisKeys::default();
    let mut conn = connect().await;
    platform_tests::redis::mark_restored(&mut conn).await;
    let epoch: String = redis::cmd("GET")
        .arg(keys.epoch())
        .query_async(&mut conn)
        .await
        .unwrap();
    let retention = Duration::from_secs(930);
    let revocation = || Revocation::token(uuid::Uuid::new_v4(), unix_now() + 900);
    publish(&mut conn, &keys, &[revocation()], retention)
        .await
        .unwrap();
    let first_id: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.stream())
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let first_ms: u64 = first_id[0].0.split('-').next().unwrap().parse().unwrap();

    let index = Arc::new(RevocationIndex::default());
    let status = Arc::new(FollowerStatus::default());
    let source = auth_core::redis::RedisSource::new(&url, &Default::default(), &[]).unwrap();
    let (trigger, shutdown) = auth_core::shutdown::channel();
    tokio::spawn(StreamFollower::new(source, keys.clone(), index.clone(), status.clone()).run(shutdown));
    let until = async |count: usize| {
        let deadline = Instant::now() + BOUND;
        while index.len() < count {
            assert!(
                Instant::now() < deadline,
                "the index never held {count} revocations"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    until(1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish(&mut conn, &keys, &[revocation()], retention)
        .await
        .unwrap();
    until(2).await;

    redis.restart();
    let mut conn = connect().await;
    let () = redis::cmd("SET")
        .arg(keys.epoch())
        .arg(&epoch)
        .query_async(&mut conn)
        .await
        .unwrap();
    let behind = revocation();
    let mut add = redis::cmd("XADD");
    add.arg(keys.stream()).arg(format!("{}-0", first_ms + 1));
    for (field, value) in behind.stream_fields() {
        add.arg(field).arg(value);
    }
    let _: String = add.query_async(&mut conn).await.unwrap();
    until(3).await;
    assert!(status.loads() >= 2, "read again, not resumed");
    trigger.trigger();
}
