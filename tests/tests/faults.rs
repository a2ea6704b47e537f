//! Faults injected into real dependencies while the platform serves: nothing hangs, the answer
//! during the fault is a 503 with `Retry-After`, no acknowledged revocation is ever accepted, no
//! acknowledged write is lost, and the platform recovers by itself (the times are printed; they
//! are reported, not asserted). Each fault of [`fault_suite`] runs under a mixed load.

use std::time::{Duration, Instant};

use platform_tests::fault_suite::{self, Fault, Report};
use platform_tests::load::Phase;
use platform_tests::server::start;
use platform_tests::verifier::{start_verifier, verifier_settings};
use platform_tests::{RedisServer, migrated_database};
use serde_json::json;

/// Longer than any answer may take: only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

async fn answered<T>(what: &str, request: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, request)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_redis_is_a_503_never_a_hang_nor_an_accepted_revoked_token_and_is_recovered_from() {
    let redis = RedisServer::start();
    let server = start(migrated_database().await, &redis.url(0), |_| {}).await;
    let jwks = format!("{}/.well-known/jwks.json", server.url);
    let verifier = start_verifier(verifier_settings(&jwks, &redis.url(0)), true).await;
    let user = server.new_user().await;
    let (revoked, kept) = (server.login(&user).await, server.login(&user).await);
    let logout = server.logout(&revoked.access).await;
    assert_eq!(logout.status(), 204);
    verifier.wait_for_status(&revoked.access, 401, HANG).await;

    // SIGSTOP: connections stay open and nothing answers, longer than every timeout.
    redis.freeze();
    let frozen = Instant::now();
    let refused = answered("logout", server.logout(&kept.access)).await;
    assert_eq!(refused.status(), 503, "not done, so not acknowledged");
    assert!(refused.headers().contains_key("retry-after"));
    let login = answered(
        "login",
        server.post(
            "/api/auth/login",
            &json!({ "email": user.email, "password": user.password }),
        ),
    )
    .await;
    assert_eq!(login.status(), 503);
    assert!(login.headers().contains_key("retry-after"));
    assert_ne!(
        answered("the sidecar", verifier.verify(&revoked.access))
            .await
            .status(),
        200
    );
    answered("the sidecar", verifier.wait_for_status(&user.access, 503, HANG)).await;
    let closed = verifier.verify(&user.access).await;
    assert!(closed.headers().contains_key("retry-after"));
    println!(
        "during the freeze: logout 503, login 503, the sidecar closed after {:?}",
        frozen.elapsed()
    );

    redis.thaw();
    let thawed = Instant::now();
    verifier.wait_for_status(&kept.access, 200, HANG).await;
    let sidecar = thawed.elapsed();
    let mut answers = Vec::new();
    while thawed.elapsed() < Duration::from_secs(2) {
        answers.push(verifier.verify(&revoked.access).await.status().as_u16());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !answers.contains(&200),
        "the token revoked before the freeze stays refused"
    );
    let logout = server.logout(&kept.access).await;
    assert_eq!(
        logout.status(),
        204,
        "the logout refused during the freeze works now"
    );
    verifier.wait_for_status(&kept.access, 401, HANG).await;
    let relogin = server
        .post(
            "/api/auth/login",
            &json!({ "email": user.email, "password": user.password }),
        )
        .await;
    assert_eq!(relogin.status(), 200);
    println!("recovered without a restart: the sidecar {sidecar:?} after the thaw");
}

/// Runs `fault` under load, prints the report and asserts every promise was kept.
async fn survives(fault: Fault) -> Report {
    let report = fault_suite::run(fault).await;
    report.print();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(
        report.lost_registrations.is_empty(),
        "acknowledged registrations lost: {:?}",
        report.lost_registrations
    );
    assert_eq!(report.revived_tokens, 0, "acknowledged logouts undone");
    assert!(
        report.checked.0 > 0 && report.checked.1 > 0,
        "the load wrote something"
    );
    assert!(report.kept(), "recovered by itself");
    report
}

/// Whether the server refused one of its operations with 503 during the fault (which ones depends
/// on where each client was when it began).
fn server_refused_during(report: &Report) -> bool {
    ["register", "login", "refresh", "logout"]
        .iter()
        .any(|operation| answered_during(report, &format!("{operation} 503")))
}

fn answered_during(report: &Report, answer: &str) -> bool {
    report
        .summary(Phase::During)
        .split(", ")
        .any(|entry| entry.starts_with(&format!("{answer}×")))
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_killed_and_restarted_empty() {
    survives(Fault::RedisKilled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_frozen_past_every_timeout() {
    let report = survives(Fault::RedisFrozen).await;
    assert!(answered_during(&report, "verify 503"), "the sidecars fail closed");
    assert!(
        server_refused_during(&report),
        "the server refuses what it cannot do"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_flushed() {
    survives(Fault::RedisFlushed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_fails_the_primary_over() {
    survives(Fault::SentinelFailover).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_restarted() {
    survives(Fault::PostgresRestarted).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_frozen_past_every_timeout() {
    let report = survives(Fault::PostgresFrozen).await;
    assert!(
        server_refused_during(&report),
        "the server refuses what it cannot do"
    );
    assert!(
        !answered_during(&report, "verify 503"),
        "the sidecars need no database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_jwks_endpoint_down() {
    let report = survives(Fault::JwksDown).await;
    assert!(
        !answered_during(&report, "verify 503"),
        "known keys keep verifying"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_request() {
    survives(Fault::ReplicaKilled).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_clock_five_minutes_ahead() {
    survives(Fault::ClockAhead).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_clock_five_minutes_behind() {
    survives(Fault::ClockBehind).await;
}

/// With `AUTH_REDIS_WAIT_REPLICAS=1` a revocation is committed and acknowledged once a replica
/// holds it (so a failover promoting that replica cannot lose it). A replica that cannot confirm
/// in time delays the answer by the wait's timeout, never fails it: the revocation is already on
/// the primary and the sidecars, so it is committed durably (a restore after a failover
/// republishes it), and the metric counts the wait as timed out.
#[tokio::test(flavor = "multi_thread")]
async fn a_revocation_waits_for_a_replica_to_hold_it() {
    let primary = RedisServer::start();
    let replica = RedisServer::start_replica_of(&primary);
    let server = start(migrated_database().await, &primary.url(0), |settings| {
        settings.redis_wait_replicas = 1;
        // The longest allowed: a busy CI machine must not make the healthy replica look slow.
        settings.redis_wait_timeout = Duration::from_millis(400);
    })
    .await;
    let metric = async |outcome: &str| {
        let series = format!("auth_server_revocation_replica_waits_total{{outcome=\"{outcome}\"}} ");
        let text = server.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(&series)?.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    let first = server.new_user().await;
    assert_eq!(server.logout(&first.access).await.status(), 204);
    assert_eq!((metric("confirmed").await, metric("timed_out").await), (1, 0));
    let jwks = format!("{}/.well-known/jwks.json", server.url);
    let sidecar = start_verifier(verifier_settings(&jwks, &replica.url(0)), true).await;

    replica.freeze();
    let user = server.new_user().await;
    let logout = answered("logout", server.logout(&user.access)).await;
    assert_eq!(
        logout.status(),
        204,
        "committed although no replica confirmed in time"
    );
    assert_eq!((metric("confirmed").await, metric("timed_out").await), (1, 1));
    let relogin = server
        .post("/api/auth/refresh", &json!({ "refresh_token": user.refresh }))
        .await;
    assert_eq!(relogin.status(), 401, "the session is revoked durably");

    replica.thaw();
    sidecar.wait_for_status(&user.access, 401, HANG).await;
}
