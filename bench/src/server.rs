//! The auth server under load: login against the bcrypt ceiling, refresh and `/api/auth/me`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::load::{self, Connection, Report, request};
use crate::platform::start_auth_server;

const CONNECTIONS: usize = 64;
const PASSWORD: &str = "benchmark password 1";
const COST: u32 = 12;

struct Tokens {
    access: String,
    refresh: String,
}

type Shared = Arc<Vec<Mutex<Tokens>>>;

fn email(worker: usize) -> String {
    format!("bench-{worker}@example.com")
}

async fn post_json(
    mut connection: Connection,
    addr: SocketAddr,
    path: &str,
    body: &Value,
) -> anyhow::Result<(Connection, u16, Value)> {
    let bytes = Bytes::from(serde_json::to_vec(body)?);
    let (status, answer) = connection
        .send(request(
            "POST",
            addr,
            path,
            &[("content-type", "application/json")],
            bytes,
        ))
        .await?;
    Ok((
        connection,
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    ))
}

fn remember(tokens: &mut Tokens, body: &Value) {
    if let (Some(access), Some(refresh)) = (
        body["tokens"]["access_token"].as_str(),
        body["tokens"]["refresh_token"].as_str(),
    ) {
        tokens.access = access.to_owned();
        tokens.refresh = refresh.to_owned();
    }
}

/// Runs the whole server benchmark and prints its report.
pub async fn run(measure: Duration) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let db = platform_tests::migrated_database().await;
    let redis = platform_tests::test_redis();
    let cost = COST.to_string();
    let (server, addr) = start_auth_server(&db.url, &redis.url, &[("AUTH_BCRYPT_COST", &cost)]).await;

    // One bcrypt verification at the server's cost, on an otherwise idle machine.
    let hash = bcrypt::hash(PASSWORD, COST)?;
    let mut samples: Vec<Duration> = (0..7)
        .map(|_| {
            let started = Instant::now();
            let _ = bcrypt::verify(PASSWORD, &hash);
            started.elapsed()
        })
        .collect();
    samples.sort();
    let one_hash = samples[samples.len() / 2];
    let ceiling = cores as f64 / one_hash.as_secs_f64();

    // Accounts inserted directly with one precomputed hash, so setting up costs no bcrypt time.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url).await?;
    for worker in 0..CONNECTIONS {
        sqlx::query("INSERT INTO users (email, password_hash) VALUES ($1, $2)")
            .bind(email(worker))
            .bind(&hash)
            .execute(&mut conn)
            .await?;
    }
    let shared: Shared = Arc::new(
        (0..CONNECTIONS)
            .map(|_| {
                Mutex::new(Tokens {
                    access: String::new(),
                    refresh: String::new(),
                })
            })
            .collect(),
    );

    let login = {
        let shared = shared.clone();
        load::run(
            addr,
            CONNECTIONS,
            Duration::from_secs(3),
            measure.max(Duration::from_secs(15)),
            move |worker, connection| {
                let shared = shared.clone();
                async move {
                    let body = json!({ "email": email(worker), "password": PASSWORD });
                    let (connection, status, answer) =
                        post_json(connection, addr, "/api/auth/login", &body).await?;
                    remember(&mut *shared[worker].lock().await, &answer);
                    Ok((connection, status == 200))
                }
            },
        )
        .await?
    };

    let refresh = {
        let shared = shared.clone();
        load::run(
            addr,
            CONNECTIONS,
            Duration::from_secs(2),
            measure,
            move |worker, connection| {
                let shared = shared.clone();
                async move {
                    let mut tokens = shared[worker].lock().await;
                    let body = json!({ "refresh_token": tokens.refresh });
                    let (connection, status, answer) =
                        post_json(connection, addr, "/api/auth/refresh", &body).await?;
                    remember(&mut tokens, &answer);
                    Ok((connection, status == 200))
                }
            },
        )
        .await?
    };

    let me = {
        let mut bearers = Vec::with_capacity(CONNECTIONS);
        for tokens in shared.iter() {
            bearers.push(format!("Bearer {}", tokens.lock().await.access));
        }
        let bearers = Arc::new(bearers);
        load::run(
            addr,
            CONNECTIONS,
            Duration::from_secs(2),
            measure,
            move |worker, mut connection| {
                let bearers = bearers.clone();
                async move {
                    let (status, _) = connection
                        .send(request(
                            "GET",
                            addr,
                            "/api/auth/me",
                            &[("authorization", &bearers[worker])],
                            Bytes::new(),
                        ))
                        .await?;
                    Ok((connection, status == 200))
                }
            },
        )
        .await?
    };

    let (wrong, unknown) = login_latencies(addr).await?;
    print_report(cores, one_hash, ceiling, &login, &refresh, &me, wrong, unknown);
    drop(server);
    Ok(())
}

/// Median latency of sequential logins with a wrong password and for an unknown account.
async fn login_latencies(addr: SocketAddr) -> anyhow::Result<(Duration, Duration)> {
    let mut connection = Connection::open(addr).await?;
    let mut medians = Vec::new();
    for email in ["bench-0@example.com", "nobody@example.com"] {
        let mut samples = Vec::new();
        for _ in 0..15 {
            let started = Instant::now();
            let (back, status, _) = post_json(
                connection,
                addr,
                "/api/auth/login",
                &json!({"email": email, "password": "wrong password 1"}),
            )
            .await?;
            connection = back;
            anyhow::ensure!(status == 401, "a wrong login answered {status}");
            samples.push(started.elapsed());
        }
        samples.sort();
        medians.push(samples[samples.len() / 2]);
    }
    Ok((medians[0], medians[1]))
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    cores: usize,
    one_hash: Duration,
    ceiling: f64,
    login: &Report,
    refresh: &Report,
    me: &Report,
    wrong: Duration,
    unknown: Duration,
) {
    println!(
        "auth-server benchmark: release build, {cores} cores shared by server, PostgreSQL, Redis and load generator"
    );
    println!(
        "closed loop, {CONNECTIONS} keep-alive connections; bcrypt cost {COST}; failures count non-200 answers"
    );
    println!();
    println!(
        "bcrypt verify (one, idle machine)   {:>9.1} ms   ceiling = {cores} cores / {:.1} ms = {ceiling:.2} logins/s",
        one_hash.as_secs_f64() * 1000.0,
        one_hash.as_secs_f64() * 1000.0
    );
    for (name, report) in [
        ("POST /api/auth/login", login),
        ("POST /api/auth/refresh", refresh),
        ("GET /api/auth/me", me),
    ] {
        println!(
            "{name:<36}{:>9.1} req/s   p50 {:>7.2} ms   p99 {:>7.2} ms   ({} requests, {} failures, {:.0} s)",
            report.rate(),
            report.percentile_ms(50.0),
            report.percentile_ms(99.0),
            report.requests,
            report.failures,
            report.elapsed.as_secs_f64()
        );
    }
    println!(
        "login throughput / bcrypt ceiling   {:>9.1} %   (target >= 90 %)",
        100.0 * login.rate() / ceiling
    );
    println!(
        "failed login median: wrong password {:.1} ms, unknown account {:.1} ms",
        wrong.as_secs_f64() * 1000.0,
        unknown.as_secs_f64() * 1000.0
    );
}
