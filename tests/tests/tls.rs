//! TLS to every dependency, against real servers with TLS on: PostgreSQL (`ssl=on`, certificates
//! the harness makes) and `redis-server --tls-port`, with a CA file and a client certificate. A
//! wrong CA, a missing client certificate and a server without TLS are each refused with an error
//! that says so, and never fall back to plain text.

use std::time::Duration;

use sqlx::Connection;

use auth_core::redis::{RedisSource, RedisTls};
use platform_tests::command::run;
use platform_tests::postgres::{PostgresServer, server};
use platform_tests::process::{free_port, redis_command};
use platform_tests::server::start;
use platform_tests::service::RunningService;
use platform_tests::tls::TestPki;
use platform_tests::verifier::{TestVerifier, start_verifier, verifier_settings};
use platform_tests::{RedisServer, TestDatabase};

/// `url` with TLS required and the server verified against `ca` (chain and host name).
fn verify_full(url: &str, ca: &std::path::Path) -> String {
    format!("{url}?sslmode=verify-full&sslrootcert={}", ca.display())
}

fn redis_tls(pki: &TestPki, ca: &str, client_certificate: bool) -> RedisTls {
    RedisTls {
        ca_path: Some(pki.file(ca)),
        client_cert_path: client_certificate.then(|| pki.file("client.pem")),
        client_key_path: client_certificate.then(|| pki.file("client.key")),
    }
}

/// `PING` over a fresh connection, or the connection's error in full.
async fn ping(url: &str, tls: &RedisTls) -> Result<String, String> {
    let source = RedisSource::new(url, tls, &[]).map_err(|error| format!("{error:#}"))?;
    let attempt = async {
        let client = source.primary().await.map_err(|error| error.to_string())?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|error| error.to_string())?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(|error| error.to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()))
}

#[tokio::test]
async fn redis_over_tls_needs_the_right_ca_and_client_certificate_and_never_falls_back() {
    let pki = TestPki::new();
    let tls_port = free_port();
    let redis = RedisServer::start_tls(&pki, tls_port, true);
    let url = format!("rediss://127.0.0.1:{tls_port}/0");

    assert_eq!(
        ping(&url, &redis_tls(&pki, "ca.pem", true)).await,
        Ok("PONG".to_owned())
    );
    let wrong_ca = ping(&url, &redis_tls(&pki, "other-ca.pem", true))
        .await
        .unwrap_err();
    assert!(wrong_ca.contains("invalid peer certificate"), "{wrong_ca}");
    let no_client_certificate = ping(&url, &redis_tls(&pki, "ca.pem", false)).await;
    assert!(no_client_certificate.is_err(), "{no_client_certificate:?}");
    let plain_text_to_tls = ping(&format!("redis://127.0.0.1:{tls_port}/0"), &RedisTls::default()).await;
    assert!(plain_text_to_tls.is_err(), "{plain_text_to_tls:?}");
    let tls_to_plain = ping(
        &format!("rediss://127.0.0.1:{}/0", redis.port()),
        &redis_tls(&pki, "ca.pem", true),
    )
    .await;
    assert!(tls_to_plain.is_err(), "{tls_to_plain:?}");

    let plain_url = RedisSource::new("redis://127.0.0.1:6379", &redis_tls(&pki, "ca.pem", false), &[]);
    assert!(
        plain_url.unwrap_err().to_string().contains("not rediss://"),
        "TLS files with a plain URL are a misconfiguration, not a silent downgrade"
    );
    let half = RedisTls {
        client_key_path: None,
        ..redis_tls(&pki, "ca.pem", true)
    };
    assert!(RedisSource::new(&url, &half, &[]).is_err());
}

#[tokio::test]
async fn postgres_over_tls_verifies_the_server_and_refuses_a_wrong_ca_or_a_plain_server() {
    let pki = TestPki::new();
    let postgres = PostgresServer::start_tls(&pki);
    let verified = |ca: &str| verify_full(&postgres.url("postgres"), &pki.file(ca));
    let migrated = run("migrator", &["up"], &[("DATABASE_URL", &verified("ca.pem"))]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let mut connection = sqlx::postgres::PgConnection::connect(&verified("ca.pem"))
        .await
        .unwrap();
    let encrypted: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(encrypted, "the connection is TLS");

    let wrong_ca = run(
        "migrator",
        &["status"],
        &[("DATABASE_URL", &verified("other-ca.pem"))],
    )
    .await;
    assert_ne!(wrong_ca.code, 0);
    assert!(
        wrong_ca.stderr.contains("invalid peer certificate")
            && !wrong_ca.stderr.contains("not reachable after"),
        "refused at once, saying why: {}",
        wrong_ca.stderr
    );
    let plain_server = verify_full(&server().url("postgres"), &pki.file("ca.pem"));
    let refused = run("migrator", &["status"], &[("DATABASE_URL", &plain_server)]).await;
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.to_lowercase().contains("tls"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn the_server_and_the_sidecar_work_over_tls_to_both_dependencies() {
    let pki = TestPki::new();
    let postgres = PostgresServer::start_tls(&pki);
    let database_url = verify_full(&postgres.url("postgres"), &pki.file("ca.pem"));
    let migrated = run("migrator", &["up"], &[("DATABASE_URL", &database_url)]).await;
    assert_eq!(migrated.code, 0, "{}", migrated.stderr);
    let tls_port = free_port();
    let redis = RedisServer::start_tls(&pki, tls_port, true);
    let redis_url = format!("rediss://127.0.0.1:{tls_port}/0");
    // The sidecars' ACL user may only read the platform's keys: a sidecar's credential cannot
    // write a revocation away.
    let created = redis_command(
        redis.port(),
        "ACL SETUSER sidecar on >sidecar-secret resetkeys ~auth:* resetchannels -@all +@read +@connection",
    );
    assert_eq!(created.ok().as_deref(), Some("+OK"));
    let sidecar_url = format!("rediss://sidecar:sidecar-secret@127.0.0.1:{tls_port}/0");
    let db = TestDatabase {
        name: "postgres".to_owned(),
        url: database_url,
    };
    let server = start(db, &redis_url, |settings| {
        settings.redis_tls = redis_tls(&pki, "ca.pem", true);
    })
    .await;
    let sidecar = || {
        let mut settings = verifier_settings(&format!("{}/.well-known/jwks.json", server.url), &sidecar_url);
        settings.redis_tls = redis_tls(&pki, "ca.pem", true);
        start_verifier(settings, true)
    };
    let verifier = sidecar().await;

    let user = server.new_user().await;
    assert_eq!(verifier.verify(&user.access).await.status(), 200);
    let logout = server.logout(&user.access).await;
    assert_eq!(logout.status(), 204);
    verifier
        .wait_for_status(&user.access, 401, Duration::from_secs(10))
        .await;
    // A sidecar starting now reads the stream in bulk (its own reader, not redis-rs) over TLS.
    let late = sidecar().await;
    assert_eq!(late.verify(&user.access).await.status(), 401);
    let other = server.new_user().await;
    assert_eq!(late.verify(&other.access).await.status(), 200);

    let source = RedisSource::new(&sidecar_url, &redis_tls(&pki, "ca.pem", true), &[]).unwrap();
    let mut conn = source
        .primary()
        .await
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let erased = redis::cmd("DEL")
        .arg("auth:revocations")
        .query_async::<i64>(&mut conn)
        .await
        .unwrap_err();
    assert!(erased.to_string().to_lowercase().contains("noperm"), "{erased}");
}

#[tokio::test]
async fn a_server_given_the_wrong_redis_ca_is_not_ready_and_says_why() {
    let pki = TestPki::new();
    let tls_port = free_port();
    let _redis = RedisServer::start_tls(&pki, tls_port, false);
    let db = platform_tests::migrated_database().await;
    let redis_url = format!("rediss://127.0.0.1:{tls_port}/0");
    let wrong_ca = pki.file("other-ca.pem").display().to_string();
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("AUTH_LISTEN", "127.0.0.1:0"),
        ("AUTH_REDIS_TLS__CA_PATH", wrong_ca.as_str()),
    ];
    let server = RunningService::start("auth-server", "AUTH_", &env).await;
    let response = reqwest::get(format!("{}/health/ready", server.admin_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let report = response.text().await.unwrap();
    assert!(report.contains("invalid peer certificate"), "{report}");
    server.terminate().await;

    let missing = [
        ("AUTH_REDIS_TLS__CA_PATH", "/nonexistent/ca.pem"),
        ("AUTH_LISTEN", "127.0.0.1:0"),
    ];
    let refused = run("auth-server", &[], &[&env[..2], &missing[..]].concat()).await;
    assert_eq!(refused.code, 64, "{}", refused.stderr);
    assert!(refused.stderr.contains("AUTH_REDIS_TLS"), "{}", refused.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_fetches_keys_and_reaches_its_app_over_https_trusting_only_its_ca() {
    use poem::endpoint::make_sync;
    let pki = TestPki::new();
    let server = platform_tests::server::spawn_server().await;
    let jwks = server.get_text("/.well-known/jwks.json").await;
    let port = pki
        .serve_https(
            poem::Route::new()
                .at("/jwks.json", make_sync(move |_| jwks.clone()))
                .at("/*path", make_sync(|_| "the app over https")),
        )
        .await;
    let user = server.new_user().await;
    let sidecar = |ca: &str| {
        let mut settings =
            verifier_settings(&format!("https://localhost:{port}/jwks.json"), &server.redis_url);
        settings.ca_path = Some(pki.file(ca));
        settings.upstream = Some(format!("https://127.0.0.1:{port}"));
        settings
    };

    let orders = |verifier: &TestVerifier| {
        verifier
            .client
            .get(format!("{}/orders", verifier.url))
            .bearer_auth(&user.access)
            .send()
    };
    let verifier = start_verifier(sidecar("ca.pem"), true).await;
    let answer = orders(&verifier).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "the app over https");

    let distrusting = start_verifier(sidecar("other-ca.pem"), false).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = orders(&distrusting).await.unwrap();
    assert!(
        matches!(refused.status().as_u16(), 401 | 503),
        "no keys from a server it cannot verify, so nothing passes: {}",
        refused.status()
    );
}
