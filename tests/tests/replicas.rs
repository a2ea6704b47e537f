//! Three auth-server replicas and two sidecars against one PostgreSQL and one Redis: a refresh
//! token raced to two replicas yields one child, rate limits count across replicas, a logout at
//! one replica is enforced by every sidecar, and the periodic revocation re-check runs once for
//! all replicas, not once per replica; and the deployments of the data tier they run on
//! (PgBouncer, a Redis Cluster node).

use std::time::Duration;

use auth_server::rate_limit::RateLimit;
use auth_server::settings::Settings;
use platform_tests::TestDatabase;
use platform_tests::keys::TestKeys;
use platform_tests::pgbouncer::PgBouncer;
use platform_tests::server::{TestServer, start};
use platform_tests::verifier::{start_verifier, verifier_settings};
use platform_tests::{RedisServer, migrated_database, test_redis};
use serde_json::{Value, json};
use token_verifier::settings::RevocationMode;

/// Three replicas sharing a fresh database, a Redis database and their signing keys, each with
/// `customize` applied.
async fn replicas(customize: impl Fn(&mut Settings)) -> Vec<TestServer> {
    replicas_on(&migrated_database().await, 3, customize).await
}

/// `count` replicas on `db`, sharing a fresh Redis database and their signing keys (as one
/// Secret would give them), each with `customize` applied.
async fn replicas_on(db: &TestDatabase, count: usize, customize: impl Fn(&mut Settings)) -> Vec<TestServer> {
    let redis = test_redis();
    let keys = TestKeys::new(jsonwebtoken::Algorithm::RS256);
    let mut replicas = Vec::new();
    for _ in 0..count {
        let replica = start(db.clone(), &redis.url, |settings| {
            settings.keys_dir = Some(keys.dir());
            customize(settings);
        });
        replicas.push(replica.await);
    }
    replicas
}

async fn refresh(replica: &TestServer, token: &str) -> Value {
    let response = replica
        .post("/api/auth/refresh", &json!({ "refresh_token": token }))
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The value of the metric line starting with `series` on `replica`'s admin port.
async fn metric(replica: &TestServer, series: &str) -> f64 {
    let text = replica.metrics().await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_raced_to_two_replicas_yields_one_child() {
    let replicas = replicas(|_| {}).await;
    let user = replicas[0].new_user().await;
    let (first, second) = tokio::join!(
        refresh(&replicas[1], &user.refresh),
        refresh(&replicas[2], &user.refresh)
    );
    assert_eq!(
        first["tokens"]["refresh_token"], second["tokens"]["refresh_token"],
        "one child, never a second branch"
    );
    let mut db = replicas[0].db.pool().await.acquire().await.unwrap();
    let children: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_tokens WHERE parent_id IS NOT NULL")
        .fetch_one(&mut *db)
        .await
        .unwrap();
    assert_eq!(children, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_count_across_replicas() {
    let replicas = replicas(|settings| {
        settings.rate_limits.login_per_ip = RateLimit::per(4, Duration::from_secs(60));
        settings.lockout.threshold = 0;
    })
    .await;
    let user = replicas[0].new_user().await;
    let wrong = json!({ "email": user.email, "password": "not the password" });
    let mut statuses = Vec::new();
    for attempt in 0..6 {
        let response = replicas[attempt % 3].post("/api/auth/login", &wrong).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 429, 429],
        "one budget, whichever replica is asked"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logout_at_one_replica_is_enforced_by_every_sidecar() {
    let replicas = replicas(|_| {}).await;
    let jwks = format!("{}/.well-known/jwks.json", replicas[0].url);
    let sidecars = [
        start_verifier(verifier_settings(&jwks, &replicas[0].redis_url), true).await,
        start_verifier(verifier_settings(&jwks, &replicas[0].redis_url), true).await,
    ];
    let user = replicas[1].new_user().await;
    for sidecar in &sidecars {
        assert_eq!(sidecar.verify(&user.access).await.status(), 200);
    }
    let logout = replicas[2].logout(&user.access).await;
    assert_eq!(logout.status(), 204);
    for sidecar in &sidecars {
        sidecar
            .wait_for_status(&user.access, 401, Duration::from_secs(10))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_periodic_revocation_recheck_runs_once_for_all_replicas() {
    let interval = Duration::from_secs(1);
    let replicas = replicas(|settings| {
        settings.revocation_resync_interval = interval;
        settings.revocation_watch_interval = Duration::from_millis(50);
    })
    .await;
    // Long enough for each replica to find the re-check due three times or more.
    tokio::time::sleep(interval * 4).await;
    let (mut ran, mut skipped) = (0.0, 0.0);
    for replica in &replicas {
        ran += metric(replica, "auth_server_revocation_resyncs_total{outcome=\"ran\"}").await;
        skipped += metric(
            replica,
            "auth_server_revocation_resyncs_total{outcome=\"skipped\"}",
        )
        .await;
    }
    assert!(ran >= 1.0, "the re-check ran");
    assert!(
        ran <= 5.0,
        "one replica per interval ran it, not each of the three: ran {ran}, skipped {skipped}"
    );
    assert!(skipped >= ran, "the others skipped: ran {ran}, skipped {skipped}");
}

/// Two replicas through a real PgBouncer in session pooling, the schema migrated directly.
/// (Transaction pooling needs PgBouncer 1.21's protocol-level prepared statements, see README.)
#[tokio::test(flavor = "multi_thread")]
async fn replicas_work_through_pgbouncer() {
    let db = migrated_database().await;
    let pgbouncer = PgBouncer::start("session");
    let pooled = TestDatabase {
        name: db.name.clone(),
        url: pgbouncer.url(&db.name),
    };
    let replicas = replicas_on(&pooled, 2, |_| {}).await;
    let users = futures_util::future::join_all((0..8).map(|i| replicas[i % 2].new_user())).await;
    for (i, user) in users.iter().enumerate() {
        let replica = &replicas[(i + 1) % 2];
        let refreshed = refresh(replica, &user.refresh).await;
        let access = refreshed["tokens"]["access_token"].as_str().unwrap();
        assert_eq!(replica.get_auth("/api/auth/me", access).await.status(), 200);
        let logout = replica.logout(access).await;
        assert_eq!(logout.status(), 204);
        assert_eq!(
            replicas[i % 2].get_auth("/api/auth/me", access).await.status(),
            401
        );
    }
}

/// A one-node Redis Cluster refuses any command naming keys of two hash slots (`CROSSSLOT`), as
/// every cluster node does: the server and both kinds of sidecar work on it, so every command the
/// platform sends names one slot and a Redis Cluster behind a routing endpoint can hold its keys.
#[tokio::test(flavor = "multi_thread")]
async fn every_command_names_one_hash_slot_so_a_redis_cluster_node_serves_the_platform() {
    let node = RedisServer::start_cluster_node();
    let url = node.url(0);
    let server = start(migrated_database().await, &url, |settings| {
        // Two logins below, then three wrong passwords, then the refusal.
        settings.rate_limits.login_per_ip = RateLimit::per(5, Duration::from_secs(60));
    })
    .await;
    let jwks = format!("{}/.well-known/jwks.json", server.url);
    let mut lookup = verifier_settings(&jwks, &url);
    lookup.revocation_mode = RevocationMode::Lookup;
    let sidecars = [
        start_verifier(verifier_settings(&jwks, &url), true).await,
        start_verifier(lookup, true).await,
    ];
    let user = server.new_user().await;
    let second = server.login(&user).await;
    let third = server.login(&user).await;
    for sidecar in &sidecars {
        assert_eq!(sidecar.verify(&user.access).await.status(), 200);
    }
    assert_eq!(server.logout(&user.access).await.status(), 204);
    let refreshed = server
        .post("/api/auth/refresh", &json!({ "refresh_token": second.refresh }))
        .await;
    assert_eq!(refreshed.status(), 200);
    for sidecar in &sidecars {
        sidecar
            .wait_for_status(&user.access, 401, Duration::from_secs(10))
            .await;
        assert_eq!(sidecar.verify(&third.access).await.status(), 200);
    }
    let everywhere = server
        .post_auth("/api/auth/logout-all", &third.access, &json!({}))
        .await;
    assert_eq!(everywhere.status(), 204);
    for sidecar in &sidecars {
        sidecar
            .wait_for_status(&third.access, 401, Duration::from_secs(10))
            .await;
    }
    let wrong = json!({ "email": user.email, "password": "not the password at all" });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(server.post("/api/auth/login", &wrong).await.status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 429],
        "the sliding window counts on the cluster"
    );

    // Lost and restored: the restore's scripts and the sidecars' reload work there too.
    let mut conn = server.redis().await;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let fresh = server.new_user().await;
    for sidecar in &sidecars {
        sidecar
            .wait_for_status(&fresh.access, 200, Duration::from_secs(10))
            .await;
        assert_eq!(sidecar.verify(&user.access).await.status(), 401);
        assert_eq!(sidecar.verify(&third.access).await.status(), 401);
    }
}
