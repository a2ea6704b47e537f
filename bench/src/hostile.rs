//! Hostile load against release builds: what a connection costs, what the cap does, whether the
//! memory of a flood is given back, and how fast service returns after a login flood and after a
//! flapping Redis.

use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::TestKeys;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::platform::start_auth_server;
use crate::verifier::{rss_mib, verifier};

const CONNECTIONS: usize = 1000;
const CAP: usize = 200;

const VERIFY: &[u8] =
    b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Original-Method: GET\r\nX-Original-URI: /\r\n\r\n";
const LIVE: &[u8] = b"GET /api/health/live HTTP/1.1\r\nHost: x\r\n\r\n";

/// Opens `count` connections that each complete one `request` and stay open (keep-alive).
async fn idle_connections(port: u16, count: usize, request: &[u8]) -> anyhow::Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request).await?;
        let mut answer = [0u8; 1024];
        let _ = stream.read(&mut answer).await?;
        held.push(stream);
    }
    Ok(held)
}

/// Opens `count` connections that each send `bytes` of an unfinished request head.
async fn slowloris(port: u16, count: usize, bytes: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut partial = b"GET /verify HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    partial.resize(bytes, b'a');
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(&partial).await?;
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(held)
}

/// Answers to `count` connections opened over a full cap: how many got the 503.
async fn over_cap(port: u16, count: usize) -> anyhow::Result<usize> {
    let mut refused = 0;
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await;
        if answer.starts_with(b"HTTP/1.1 503") {
            refused += 1;
        }
    }
    Ok(refused)
}

async fn restored_redis() -> anyhow::Result<RedisServer> {
    let redis = RedisServer::start();
    let mut conn = redis::Client::open(redis.url(0))?
        .get_multiplexed_async_connection()
        .await?;
    platform_tests::redis::mark_restored(&mut conn).await;
    Ok(redis)
}

fn per_connection_kib(before: f64, after: f64, count: usize) -> f64 {
    (after - before) * 1024.0 / count as f64
}

/// Runs the hostile-load benchmark and prints its report.
pub async fn run() -> anyhow::Result<()> {
    let mut redis = restored_redis().await?;
    let keys = TestKeys::new(Algorithm::RS256);
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None)?;
    let jwks = tempfile::NamedTempFile::new()?;
    std::fs::write(jwks.path(), serde_json::to_vec(ring.jwks())?)?;
    let redis_url = redis.url(0);
    let cap = CAP.to_string();
    let env = [
        ("REDIS_URL", redis_url.as_str()),
        ("VERIFIER_JWKS_PATH", jwks.path().to_str().unwrap_or_default()),
        ("VERIFIER_CONNECTIONS__HEADER_TIMEOUT", "60s"),
        ("VERIFIER_REDIS_GRACE", "500ms"),
    ];
    let (service, target, _) = verifier(&env).await;
    let port = target.addr.port();
    let pid = target.pid;
    let baseline = rss_mib(pid);
    let idle = idle_connections(port, CONNECTIONS, VERIFY).await?;
    let with_idle = rss_mib(pid);
    drop(idle);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_idle = rss_mib(pid);
    let loris = slowloris(port, CONNECTIONS, 8 * 1024).await?;
    let with_loris = rss_mib(pid);
    drop(loris);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_1s = rss_mib(pid);
    tokio::time::sleep(Duration::from_secs(14)).await;
    let after_15s = rss_mib(pid);
    drop(service);

    let mut capped_env = env.to_vec();
    capped_env.push(("VERIFIER_CONNECTIONS__MAX_CONNECTIONS", cap.as_str()));
    let (capped, capped_target, _) = verifier(&capped_env).await;
    let held = idle_connections(capped_target.addr.port(), CAP, VERIFY).await?;
    let refused = over_cap(capped_target.addr.port(), 50).await?;
    drop(held);
    let started = Instant::now();
    let mut back = None;
    while started.elapsed() < Duration::from_secs(10) {
        let (status, _) = platform_tests::paths::raw_get(
            capped_target.addr.port(),
            "/verify",
            &[("X-Original-Method", "GET"), ("X-Original-URI", "/")],
        )
        .await;
        if status == 401 {
            back = Some(started.elapsed());
            break;
        }
    }
    drop(capped);

    // Redis flaps: three short outages, then the time from its return to the verifier answering.
    let (flapping, flapping_target, _) = verifier(&env).await;
    let token = keys.sign(
        &keys.header(),
        &platform_tests::keys::claims(
            &uuid::Uuid::new_v4().to_string(),
            &uuid::Uuid::new_v4().to_string(),
        ),
    );
    let bearer = format!("Bearer {token}");
    let mut recoveries = Vec::new();
    for _ in 0..3 {
        redis.kill();
        // Long enough to fail closed, so the sidecar must notice Redis is back.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        redis.restart();
        let mut conn = redis::Client::open(redis.url(0))?
            .get_multiplexed_async_connection()
            .await?;
        platform_tests::redis::mark_restored(&mut conn).await;
        let returned = Instant::now();
        loop {
            let (status, _) = platform_tests::paths::raw_get(
                flapping_target.addr.port(),
                "/verify",
                &[
                    ("X-Original-Method", "GET"),
                    ("X-Original-URI", "/"),
                    ("Authorization", bearer.as_str()),
                ],
            )
            .await;
            if status == 200 || returned.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        recoveries.push(returned.elapsed());
    }
    drop(flapping);

    let (server_per_connection, flood) = auth_server_under_floods(&redis).await?;

    println!(
        "hostile-load benchmark: release builds on this machine; the verifier with its defaults except as noted"
    );
    println!("resident memory at rest                      {baseline:>7.1} MiB");
    println!(
        "{CONNECTIONS} idle keep-alive connections         {with_idle:>7.1} MiB   ({:.1} KiB per connection)",
        per_connection_kib(baseline, with_idle, CONNECTIONS)
    );
    println!(
        "{CONNECTIONS} slowloris, 8 KiB of headers each   {with_loris:>7.1} MiB   ({:.1} KiB per connection)",
        per_connection_kib(after_idle, with_loris, CONNECTIONS)
    );
    println!("after the flood left: 1 s / 15 s             {after_1s:>7.1} / {after_15s:.1} MiB");
    println!(
        "cap {CAP}, {CAP} held, 50 more                      {refused} answered 503 at once; service back {} after the holders left",
        back.map_or("never".to_owned(), |at| format!(
            "{:.0} ms",
            at.as_secs_f64() * 1000.0
        ))
    );
    let recoveries: Vec<String> = recoveries
        .iter()
        .map(|at| format!("{:.0}", at.as_secs_f64() * 1000.0))
        .collect();
    println!(
        "Redis back after a 1.5 s outage (x3)         verifier answering again after {} ms",
        recoveries.join(", ")
    );
    println!(
        "auth-server: {CONNECTIONS} idle keep-alive connections {server_per_connection:.1} KiB per connection"
    );
    println!(
        "login flood (60 clients giving up at 0.3 s, cost 12, 1 hashing thread): logins answered again {:.2} s after it left",
        flood.as_secs_f64()
    );
    Ok(())
}

/// The auth server's memory per idle connection; then sixty clients that give up after 300 ms
/// flood the login, and how long after they left a login is answered (401) again.
async fn auth_server_under_floods(redis: &RedisServer) -> anyhow::Result<(f64, Duration)> {
    let db = platform_tests::migrated_database().await;
    let (server, addr) = start_auth_server(
        &db.url,
        &redis.url(1),
        &[("AUTH_BCRYPT_COST", "12"), ("AUTH_HASH_CONCURRENCY", "1")],
    )
    .await;
    let pid = server.pid().unwrap_or(0);
    let before = rss_mib(pid);
    let idle = idle_connections(addr.port(), CONNECTIONS, LIVE).await?;
    let per_connection = per_connection_kib(before, rss_mib(pid), CONNECTIONS);
    drop(idle);
    let url = format!("http://{addr}");
    platform_tests::floods::impatient_login_flood(&url, 60, Duration::from_millis(300)).await;
    let left = Instant::now();
    let patient = reqwest::Client::new();
    let body = json!({ "email": "nobody@example.com", "password": "wrong horse battery" });
    while patient
        .post(format!("{url}/api/auth/login"))
        .json(&body)
        .send()
        .await?
        .status()
        != 401
    {
        anyhow::ensure!(
            left.elapsed() < Duration::from_secs(120),
            "logins never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = left.elapsed();
    drop(server);
    Ok((per_connection, recovered))
}
