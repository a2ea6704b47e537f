//! Faults injected into real dependencies while the platform serves: nothing hangs, the answer
//! during the fault is a 503 with `Retry-After`, no acknowledged revocation is ever accepted, and
//! the platform recovers by itself (the times are printed; they are reported, not asserted).

use std::time::{Duration, Instant};

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
