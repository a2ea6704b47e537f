//! The auth-server and token-verifier binaries start from their settings, connect to real
//! PostgreSQL and Redis, serve their admin listener, and stop cleanly.

use std::time::Duration;

use platform_tests::command::run;
use platform_tests::service::RunningService;
use platform_tests::{RedisServer, empty_database, migrated_database, test_redis};
use serde_json::Value;

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("the admin listener answers");
    (response.status().as_u16(), response.text().await.unwrap())
}

fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {report}"))
}

#[tokio::test]
async fn the_server_is_ready_once_database_redis_and_schema_are() {
    let db = migrated_database().await;
    let redis = test_redis();
    let server = RunningService::start(
        "auth-server",
        "AUTH_",
        &[
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", &redis.url),
            ("AUTH_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    server.wait_for("/health/ready", 200).await;
    let (status, body) = get(&format!("{}/health/ready", server.admin_url)).await;
    assert_eq!(status, 200);
    let report: Value = serde_json::from_str(&body).unwrap();
    for name in ["database", "schema", "redis"] {
        assert_eq!(component(&report, name)["status"], "ok");
    }
    let (status, metrics) = get(&format!("{}/metrics", server.admin_url)).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("auth_server_process_resident_memory_bytes"),
        "{metrics}"
    );

    let stopped = server.terminate().await;
    assert_eq!(stopped.code, 0, "{stopped:#?}");
}

#[tokio::test]
async fn the_server_is_not_ready_until_the_schema_is_migrated() {
    let db = empty_database().await;
    let redis = test_redis();
    let server = RunningService::start(
        "auth-server",
        "AUTH_",
        &[
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", &redis.url),
            ("AUTH_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let (status, body) = get(&format!("{}/health/ready", server.admin_url)).await;
    assert_eq!(status, 503);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(component(&report, "schema")["status"], "failing");
    assert!(
        component(&report, "schema")["reason"]
            .as_str()
            .unwrap()
            .contains("migrator up")
    );

    let migrated = run("migrator", &["up"], &[("DATABASE_URL", &db.url)]).await;
    assert_eq!(migrated.code, 0, "{migrated:#?}");
    server.wait_for("/health/ready", 200).await;
}

#[tokio::test]
async fn the_server_starts_without_redis_and_reports_it() {
    let db = migrated_database().await;
    let mut redis = RedisServer::start();
    let url = redis.url(0);
    redis.kill();
    let server = RunningService::start(
        "auth-server",
        "AUTH_",
        &[
            ("DATABASE_URL", &db.url),
            ("REDIS_URL", &url),
            ("AUTH_LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let (status, body) = get(&format!("{}/health/ready", server.admin_url)).await;
    assert_eq!(status, 503);
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(component(&report, "redis")["status"], "failing");
    assert_eq!(component(&report, "database")["status"], "ok");

    redis.restart();
    server.wait_for("/health/ready", 200).await;
}

#[tokio::test]
async fn the_verifier_is_ready_once_keys_and_a_restored_revocation_state_are_loaded() {
    let redis = test_redis();
    let keys = platform_tests::keys::TestKeys::new(jsonwebtoken::Algorithm::RS256);
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None).unwrap();
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), serde_json::to_vec(ring.jwks()).unwrap()).unwrap();
    let verifier = RunningService::start(
        "token-verifier",
        "VERIFIER_",
        &[
            ("REDIS_URL", &redis.url),
            ("VERIFIER_LISTEN", "127.0.0.1:0"),
            ("VERIFIER_JWKS_PATH", jwks.path().to_str().unwrap()),
        ],
    )
    .await;
    // Redis holds no revocation state yet (no server has restored it): an empty stream proves
    // nothing, so the verifier waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, report) = get(&format!("{}/health/ready", verifier.admin_url)).await;
    assert_eq!(status, 503, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    assert_eq!(component(&report, "keys")["status"], "ok");
    assert_eq!(component(&report, "revocation_index")["status"], "failing");
    let mut conn = redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    platform_tests::redis::mark_restored(&mut conn).await;
    verifier.wait_for("/health/ready", 200).await;
    let (_, metrics) = get(&format!("{}/metrics", verifier.admin_url)).await;
    assert!(
        metrics.contains("verifier_process_resident_memory_bytes"),
        "{metrics}"
    );
    assert!(metrics.contains("verifier_keys 1"), "{metrics}");
    let stopped = verifier.terminate().await;
    assert_eq!(stopped.code, 0, "{stopped:#?}");
}

#[tokio::test]
async fn bad_settings_stop_each_program_with_one_line_and_code_64() {
    type Environment<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Environment, &str); 4] = [
        (
            "auth-server",
            &[("AUTH_UNRELATED", "x"), ("AUTH_BCRYPT_COST", "lots")],
            "AUTH_BCRYPT_COST",
        ),
        (
            "auth-server",
            &[("REDIS_URL", "http://user:pw@example")],
            "REDIS_URL",
        ),
        (
            "token-verifier",
            &[("VERIFIER_LISTEN", "everywhere")],
            "VERIFIER_LISTEN",
        ),
        (
            "migrator",
            &[("MIGRATOR_LOG_FORMAT", "xml")],
            "MIGRATOR_LOG_FORMAT",
        ),
    ];
    for (program, env, setting) in cases {
        let args: &[&str] = if program == "migrator" { &["status"] } else { &[] };
        let finished = run(program, args, env).await;
        assert_eq!(finished.code, 64, "{program}: {finished:#?}");
        let lines: Vec<&str> = finished.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{program}: {finished:#?}");
        assert!(
            lines[0].starts_with(&format!("error: invalid configuration: {setting}: ")),
            "{program}: {}",
            lines[0]
        );
        assert!(!finished.stderr.contains(":pw@"), "a secret leaked: {}", lines[0]);
    }
}

#[tokio::test]
async fn a_taken_port_is_one_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let redis = test_redis();
    let finished = run(
        "token-verifier",
        &[],
        &[
            ("REDIS_URL", &redis.url),
            ("VERIFIER_ADMIN_LISTEN", &addr),
            ("VERIFIER_LOG_FORMAT", "human"),
            ("VERIFIER_JWKS_PATH", "/nonexistent/jwks.json"),
        ],
    )
    .await;
    assert_eq!(finished.code, 1);
    let errors: Vec<&str> = finished.error_lines();
    assert_eq!(errors.len(), 1, "{finished:#?}");
    assert!(
        errors[0].contains(&format!("cannot bind the admin listener to {addr}")),
        "{}",
        errors[0]
    );
}
