//! Faults injected into real dependencies while the platform serves: nothing hangs, the answer
//! during the fault is a 503 with `Retry-After`, and the platform recovers by itself (the times
//! are printed; they are reported, not asserted).

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
async fn a_frozen_redis_is_a_503_never_a_hang_and_is_recovered_from_by_itself() {
    let redis = RedisServer::start();
    let server = start(migrated_database().await, &redis.url(0), |_| {}).await;
    let jwks = format!("{}/.well-known/jwks.json", server.url);
    let verifier = start_verifier(verifier_settings(&jwks, &redis.url(0)), true).await;
    let user = server.new_user().await;
    let session = server.login(&user).await;
    assert_eq!(verifier.verify(&session.access).await.status(), 200);

    // SIGSTOP: connections stay open and nothing answers, longer than every timeout.
    redis.freeze();
    let frozen = Instant::now();
    let logout = answered(
        "logout",
        server.post_auth("/api/auth/logout", &session.access, &json!({})),
    )
    .await;
    let acknowledged = logout.status() == 204;
    assert!(
        acknowledged || logout.status() == 503,
        "a logout is done (durably) or refused: {}",
        logout.status()
    );
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
    for token in [&user.access, &session.access] {
        let answer = answered("the sidecar", verifier.verify(token)).await;
        assert_eq!(
            answer.status(),
            503,
            "the sidecar fails closed once its grace ran out"
        );
        assert!(answer.headers().contains_key("retry-after"));
    }
    println!(
        "during the freeze: logout {}, login {}, sidecar 503, after {:?}",
        logout.status(),
        login.status(),
        frozen.elapsed()
    );

    redis.thaw();
    let thawed = Instant::now();
    // The logout acknowledged during the freeze reaches Redis only when the server's retry runs,
    // while the sidecar trusts the same Redis again as soon as it answers: the revoked token's
    // exposure after the thaw is measured and printed (it should be zero: issue 15, open).
    let mut accepted = 0;
    let exposure = loop {
        match verifier.verify(&session.access).await.status().as_u16() {
            401 => break thawed.elapsed(),
            200 => accepted += 1,
            _ => {}
        }
        assert!(thawed.elapsed() < HANG, "the revoked token is refused again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    if !acknowledged {
        assert_eq!(
            accepted, 0,
            "a logout refused during the freeze left nothing to race"
        );
    }
    verifier.wait_for_status(&user.access, 200, HANG).await;
    let sidecar = thawed.elapsed();
    let relogin = loop {
        let answer = server
            .post(
                "/api/auth/login",
                &json!({ "email": user.email, "password": user.password }),
            )
            .await;
        if answer.status() != 503 || thawed.elapsed() > HANG {
            break answer.status();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(relogin, 200);
    println!(
        "recovered without a restart: the sidecar in {sidecar:?}, logins in {:?} after the thaw; \
         the token revoked during the freeze was accepted {accepted} times, for {exposure:?}",
        thawed.elapsed()
    );
}
