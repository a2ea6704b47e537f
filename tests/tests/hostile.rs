//! Hostile clients against the real binaries: slow, idle and silent connections, too many of
//! them, oversized headers, stalled bodies, file descriptors running out, a password-hashing
//! flood from clients that leave.

use std::time::{Duration, Instant};

use platform_tests::process::free_port;
use platform_tests::service::RunningService;
use platform_tests::{RedisServer, migrated_database};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BOUND: Duration = Duration::from_secs(15);

/// A verifier binary on a free port with `extra` settings, its Redis already restored.
async fn verifier(extra: &[(&str, &str)]) -> (RunningService, u16, tempfile::NamedTempFile, RedisServer) {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url(0))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    platform_tests::redis::mark_restored(&mut conn).await;
    let keys = platform_tests::keys::TestKeys::new(jsonwebtoken::Algorithm::RS256);
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None).unwrap();
    let jwks = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(jwks.path(), serde_json::to_vec(ring.jwks()).unwrap()).unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let redis_url = redis.url(0);
    let mut env = vec![
        ("REDIS_URL", redis_url.as_str()),
        ("VERIFIER_LISTEN", listen.as_str()),
        ("VERIFIER_JWKS_PATH", jwks.path().to_str().unwrap()),
        ("VERIFIER_LOG_LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    let service = RunningService::start("token-verifier", "VERIFIER_", &env).await;
    service.wait_for("/health/ready", 200).await;
    (service, port, jwks, redis)
}

/// `GET /verify` on a fresh connection; the status, or 0 when the connection failed.
async fn verify_status(port: u16) -> u16 {
    platform_tests::paths::raw_get(
        port,
        "/verify",
        &[("X-Original-Method", "GET"), ("X-Original-URI", "/")],
    )
    .await
    .0
}

/// Reads until the peer closes or `within` passes; whether it closed.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn slow_silent_and_idle_connections_are_closed_by_their_deadlines() {
    let (service, port, _jwks, _redis) = verifier(&[
        ("VERIFIER_CONNECTIONS__HEADER_TIMEOUT", "1s"),
        ("VERIFIER_CONNECTIONS__IDLE_TIMEOUT", "4s"),
    ])
    .await;
    // Slowloris: a header byte every 300 ms never completes a request.
    let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    slow.write_all(b"GET /verify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < BOUND {
        if slow.write_all(b"X").await.is_err() || closed_within(&mut slow, Duration::from_millis(300)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripping header is cut off");
    // A connection that never says anything is held no longer than the header deadline.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(
        closed_within(&mut silent, BOUND).await,
        "a silent connection is closed"
    );
    // An idle keep-alive connection outlives the header deadline, not the idle one.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\nX-Original-URI: /\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let read = idle.read(&mut answer).await.unwrap();
    assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 401"));
    assert!(
        !closed_within(&mut idle, Duration::from_millis(1500)).await,
        "kept alive past the header deadline"
    );
    assert!(closed_within(&mut idle, BOUND).await, "closed once idle too long");
    let metrics =
        platform_tests::process::get_text(&reqwest::Client::new(), &format!("{}/metrics", service.admin_url))
            .await;
    for reason in ["header_timeout", "idle_timeout"] {
        assert!(
            metrics.contains(&format!(
                "verifier_connections_closed_total{{listener=\"public\",reason=\"{reason}\"}}"
            )),
            "{reason}: {metrics}"
        );
    }
}

#[tokio::test]
async fn beyond_the_connection_cap_the_answer_is_503_and_service_returns() {
    let (_service, port, _jwks, _redis) = verifier(&[("VERIFIER_CONNECTIONS__MAX_CONNECTIONS", "8")]).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(BOUND, extra.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}", body.len())),
        "{answer}"
    );
    let problem: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["status"], 503);
    drop(held);
    let started = Instant::now();
    while verify_status(port).await != 401 {
        assert!(started.elapsed() < BOUND, "service never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn oversized_headers_are_refused_before_they_are_buffered() {
    let (_service, port, _jwks, _redis) =
        verifier(&[("VERIFIER_CONNECTIONS__MAX_HEADER_BYTES", "16384")]).await;
    let huge = "x".repeat(64 * 1024);
    let (status, _) = platform_tests::paths::raw_get(port, "/verify", &[("X-Padding", huge.as_str())]).await;
    assert!(status == 431 || status == 0, "{status}");
    // A request with a maximal token and ordinary headers still fits.
    let token = "a".repeat(8 * 1024);
    let bearer = format!("Bearer {token}");
    let (status, _) = platform_tests::paths::raw_get(
        port,
        "/verify",
        &[
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/"),
            ("Authorization", bearer.as_str()),
        ],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn out_of_file_descriptors_the_accept_loop_rests_instead_of_spinning_and_recovers() {
    let (service, port, _jwks, _redis) = verifier(&[]).await;
    let pid = service.pid().unwrap();
    // What is open now, plus a little: then silent connections exhaust the descriptors.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let set_soft_limit = |limit: String| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid.to_string(), &format!("--nofile={limit}:")])
            .status()
            .unwrap();
        assert!(status.success());
    };
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let original = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .unwrap()
        .to_owned();
    set_soft_limit((open + 8).to_string());
    let mut silent = Vec::new();
    for _ in 0..64 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            silent.push(stream);
        }
    }
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = cpu_seconds(pid) - before;
    assert!(
        spent < 0.5,
        "{spent} s of CPU in 2 s with the descriptors gone: the accept loop spins"
    );
    drop(silent);
    set_soft_limit(original);
    let started = Instant::now();
    while verify_status(port).await != 401 {
        assert!(started.elapsed() < BOUND, "service never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics =
        platform_tests::process::get_text(&reqwest::Client::new(), &format!("{}/metrics", service.admin_url))
            .await;
    let failures: u64 = metrics
        .lines()
        .find(|line| line.starts_with("verifier_accept_failures_total{listener=\"public\"}"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(failures > 0, "{metrics}");
    let stopped = service.terminate().await;
    let warnings = stopped
        .stderr
        .lines()
        .filter(|line| line.contains("cannot accept connections"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "rate-limited warnings, got {warnings}"
    );
}

/// An auth-server binary on a free port with `extra` settings.
async fn auth_server(
    extra: &[(&str, &str)],
) -> (RunningService, u16, RedisServer, platform_tests::TestDatabase) {
    let redis = RedisServer::start();
    let db = migrated_database().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let redis_url = redis.url(0);
    let mut env = vec![
        ("DATABASE_URL", db.url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("AUTH_LISTEN", listen.as_str()),
        ("AUTH_LOG_LEVEL", "warn"),
        ("AUTH_RATE_LIMITS__LOGIN_PER_IP", "off"),
        ("AUTH_RATE_LIMITS__LOGIN_PER_ACCOUNT", "off"),
    ];
    env.extend_from_slice(extra);
    let service = RunningService::start("auth-server", "AUTH_", &env).await;
    service.wait_for("/health/ready", 200).await;
    (service, port, redis, db)
}

#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    let (_service, port, _redis, _db) = auth_server(&[("AUTH_CONNECTIONS__BODY_TIMEOUT", "1s")]).await;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream
        .write_all(
            b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"email\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(BOUND, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server answered or closed");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_login_flood_from_clients_that_leave_is_not_hashed_and_logins_return_within_seconds() {
    let (service, port, _redis, _db) = auth_server(&[
        ("AUTH_BCRYPT_COST", "12"),
        ("AUTH_HASH_CONCURRENCY", "1"),
        ("AUTH_HASH_MAX_WAIT", "2s"),
    ])
    .await;
    let url = format!("http://127.0.0.1:{port}");
    platform_tests::floods::impatient_login_flood(&url, 60, Duration::from_millis(300)).await;
    let left = Instant::now();
    let patient = reqwest::Client::new();
    let body = json!({ "email": "nobody@example.com", "password": "wrong horse battery" });
    let mut statuses = Vec::new();
    loop {
        let status = patient
            .post(format!("{url}/api/auth/login"))
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        statuses.push(status);
        if status == 401 {
            break;
        }
        assert_eq!(status, 503);
        assert!(left.elapsed() < BOUND, "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("logins answered again {:?} after the flood left", left.elapsed());
    let metrics =
        platform_tests::process::get_text(&reqwest::Client::new(), &format!("{}/metrics", service.admin_url))
            .await;
    let count = |outcome: &str| -> u64 {
        metrics
            .lines()
            .find(|line| {
                line.starts_with(&format!(
                    "auth_server_password_hash_jobs_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("abandoned") + count("refused") >= 40, "{metrics}");
    assert!(
        count("hashed") < 20,
        "jobs of clients that left were hashed: {metrics}"
    );
}
