//! The token verifier under load, side by side with its ceilings, in one run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::{TestKeys, claims};
use platform_tests::process::free_port;
use platform_tests::service::RunningService;
use serde_json::{Value, json};

use crate::load::{self, Connection, Report, request};
use crate::platform::start_auth_server;

const CONNECTIONS: usize = 64;
const REVOCATIONS: usize = 100_000;
const DISTINCT_TOKENS: usize = 1_000;
const PROPAGATION_SAMPLES: usize = 200;

/// A child process serving one of the ceilings, killed when dropped.
struct Ceiling {
    process: tokio::process::Child,
}

impl Ceiling {
    fn pid(&self) -> u32 {
        self.process.id().unwrap_or(0)
    }

    async fn start(args: &[&str], port: u16) -> anyhow::Result<Self> {
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(args)
            .kill_on_drop(true)
            .spawn()?;
        wait_for_port(port).await?;
        Ok(Self { process: child })
    }
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..2000 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    anyhow::bail!("nothing listens on {port}")
}

async fn verifier(env: &[(&str, &str)]) -> (RunningService, SocketAddr, Duration) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut full: Vec<(&str, &str)> = vec![("VERIFIER_LISTEN", &listen), ("VERIFIER_LOG_LEVEL", "warn")];
    full.extend_from_slice(env);
    let started = Instant::now();
    let service = RunningService::start("token-verifier", "VERIFIER_", &full).await;
    service.wait_for_fast("/health/ready", 200).await;
    let ready = started.elapsed();
    (service, listen.parse().expect("a socket address"), ready)
}

/// Runs `/verify` with one bearer per worker (`tokens[worker % len]`, or round-robin through all
/// of them when `rotate`).
async fn hammer(
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
    rotate: bool,
    measure: Duration,
) -> anyhow::Result<Report> {
    load::run(
        addr,
        CONNECTIONS,
        Duration::from_secs(2),
        measure,
        move |worker, mut connection| {
            let tokens = tokens.clone();
            async move {
                thread_local! { static NEXT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) }; }
                let index = if rotate {
                    NEXT.with(|next| {
                        let value = next.get();
                        next.set(value.wrapping_add(1));
                        (value * CONNECTIONS + worker) % tokens.len()
                    })
                } else {
                    worker % tokens.len()
                };
                let bearer = format!("Bearer {}", tokens[index]);
                let (status, _) = connection
                    .send(request(
                        "GET",
                        addr,
                        "/verify",
                        &[("authorization", &bearer)],
                        Bytes::new(),
                    ))
                    .await?;
                Ok((connection, status == 200))
            }
        },
    )
    .await
}

async fn redis_calls(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    Ok(info
        .lines()
        .filter_map(|line| {
            line.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum())
}

/// User plus system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the numeric fields follow its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A load run with the CPU the serving process spent on it.
struct Measured {
    report: Report,
    cpu_us_per_request: f64,
}

async fn measured(
    pid: u32,
    run: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<Measured> {
    let before = cpu_seconds(pid);
    let report = run.await?;
    // The warm-up is part of the CPU time, so it is counted against the requests of both windows.
    let cpu = cpu_seconds(pid) - before;
    let total_requests = report.requests as f64 * (1.0 + 2.0 / report.elapsed.as_secs_f64());
    Ok(Measured {
        cpu_us_per_request: cpu * 1e6 / total_requests,
        report,
    })
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

async fn json_post(
    connection: &mut Connection,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let bearer = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(bearer) = &bearer {
        headers.push(("authorization", bearer));
    }
    let (status, answer) = connection
        .send(request(
            "POST",
            addr,
            path,
            &headers,
            Bytes::from(serde_json::to_vec(body)?),
        ))
        .await?;
    Ok((status, serde_json::from_slice(&answer).unwrap_or(Value::Null)))
}

/// Runs the whole verifier benchmark and prints its report.
pub async fn run(measure: Duration) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let redis = RedisServer::start();
    let redis_url = redis.url(0);
    let db = platform_tests::migrated_database().await;
    let keys = TestKeys::new(Algorithm::RS256);
    let keys_dir = keys.dir().display().to_string();
    let ring = auth_server::keys::KeyRing::load(&keys.dir(), None)?;
    let jwks_file = tempfile::NamedTempFile::new()?;
    std::fs::write(jwks_file.path(), serde_json::to_vec(ring.jwks())?)?;

    let (server, server_addr) = start_auth_server(
        &db.url,
        &redis_url,
        &[("AUTH_KEYS_DIR", &keys_dir), ("AUTH_BCRYPT_COST", "4")],
    )
    .await;
    let jwks_url = format!("http://{server_addr}/.well-known/jwks.json");

    // Start-up with nothing to load yet: keys only.
    let (empty_verifier, _, ready_empty) = verifier(&[
        ("REDIS_URL", redis_url.as_str()),
        ("VERIFIER_JWKS_URL", jwks_url.as_str()),
    ])
    .await;
    drop(empty_verifier);

    // 100,000 revocations on the stream, as a busy platform would have within one token lifetime.
    let mut conn = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let until = auth_core::revocation::unix_now() + 900;
    for chunk in 0..REVOCATIONS / 1000 {
        let mut pipe = redis::pipe();
        for _ in 0..1000 {
            pipe.cmd("XADD")
                .arg("auth:revocations")
                .arg("*")
                .arg("kind")
                .arg("jti")
                .arg("id")
                .arg(uuid::Uuid::new_v4().to_string())
                .arg("until")
                .arg(until)
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await?;
        let _ = chunk;
    }

    let mut api = Connection::open(server_addr).await?;
    let email = "bench@example.com";
    let password = "benchmark password 1";
    let (status, registered) = json_post(
        &mut api,
        server_addr,
        "/api/auth/register",
        None,
        &json!({"email": email, "password": password}),
    )
    .await?;
    anyhow::ensure!(status == 201, "registration answered {status}");
    let user_id = registered["user"]["id"].as_str().unwrap_or_default().to_owned();
    let session = registered["session"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let one_token = Arc::new(vec![
        registered["tokens"]["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ]);
    let distinct = Arc::new(
        (0..DISTINCT_TOKENS)
            .map(|_| keys.sign(&keys.header(), &claims(&user_id, &session)))
            .collect::<Vec<_>>(),
    );

    // Each verifier scenario runs right after the ceiling it is compared with.
    let trivial_port = free_port();
    let trivial_addr: SocketAddr = format!("127.0.0.1:{trivial_port}").parse()?;
    let ceiling = Ceiling::start(&["ceiling-trivial", &trivial_addr.to_string()], trivial_port).await?;
    let trivial = measured(
        ceiling.pid(),
        hammer(trivial_addr, one_token.clone(), false, measure),
    )
    .await?;
    drop(ceiling);
    // (a) index mode, one token reused.
    let common = [
        ("REDIS_URL", redis_url.as_str()),
        ("VERIFIER_JWKS_URL", jwks_url.as_str()),
    ];
    let (index_verifier, index_addr, ready) = verifier(&common).await;
    let pid = index_verifier.pid().unwrap_or(0);
    let calls_before = redis_calls(&mut conn).await?;
    let reused = measured(pid, hammer(index_addr, one_token.clone(), false, measure)).await?;
    let calls = redis_calls(&mut conn).await?.saturating_sub(calls_before);
    let rss_under_load = rss_mib(pid);
    let metrics = reqwest_text(&format!("{}/metrics", index_verifier.admin_url)).await?;
    let entries = metrics
        .lines()
        .find_map(|line| line.strip_prefix("verifier_revocation_index_entries "))
        .unwrap_or("?")
        .to_owned();

    // Propagation: logout answered by the server, until the sidecar refuses the token.
    let mut propagation = Vec::with_capacity(PROPAGATION_SAMPLES);
    let mut probe = Connection::open(index_addr).await?;
    for _ in 0..PROPAGATION_SAMPLES {
        let (_, login) = json_post(
            &mut api,
            server_addr,
            "/api/auth/login",
            None,
            &json!({"email": email, "password": password}),
        )
        .await?;
        let token = login["tokens"]["access_token"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let bearer = format!("Bearer {token}");
        let check = request(
            "GET",
            index_addr,
            "/verify",
            &[("authorization", &bearer)],
            Bytes::new(),
        );
        anyhow::ensure!(probe.send(check).await?.0 == 200, "a fresh token was refused");
        let (status, _) = json_post(
            &mut api,
            server_addr,
            "/api/auth/logout",
            Some(&token),
            &json!({}),
        )
        .await?;
        anyhow::ensure!(status == 204, "logout answered {status}");
        let answered = Instant::now();
        loop {
            let check = request(
                "GET",
                index_addr,
                "/verify",
                &[("authorization", &bearer)],
                Bytes::new(),
            );
            if probe.send(check).await?.0 == 401 {
                propagation.push(answered.elapsed());
                break;
            }
            anyhow::ensure!(
                answered.elapsed() < Duration::from_secs(10),
                "a logout never reached the sidecar"
            );
        }
    }
    propagation.sort();
    drop(index_verifier);

    let signature_port = free_port();
    let signature_addr: SocketAddr = format!("127.0.0.1:{signature_port}").parse()?;
    let jwks_path = jwks_file.path().display().to_string();
    let ceiling = Ceiling::start(
        &["ceiling-signature", &signature_addr.to_string(), &jwks_path],
        signature_port,
    )
    .await?;
    let signature = measured(
        ceiling.pid(),
        hammer(signature_addr, distinct.clone(), true, measure),
    )
    .await?;
    drop(ceiling);

    // (b) every request fully verified: the cache is off, 1,000 distinct tokens round-robin.
    let mut no_cache_env = common.to_vec();
    no_cache_env.push(("VERIFIER_CACHE_SIZE", "0"));
    let (no_cache_verifier, no_cache_addr, _) = verifier(&no_cache_env).await;
    let fresh = measured(
        no_cache_verifier.pid().unwrap_or(0),
        hammer(no_cache_addr, distinct.clone(), true, measure),
    )
    .await?;
    drop(no_cache_verifier);

    // (c) per-request Redis lookups, one token reused.
    let mut lookup_env = common.to_vec();
    lookup_env.push(("VERIFIER_REVOCATION_MODE", "lookup"));
    let (lookup_verifier, lookup_addr, _) = verifier(&lookup_env).await;
    let lookup = measured(
        lookup_verifier.pid().unwrap_or(0),
        hammer(lookup_addr, one_token.clone(), false, measure),
    )
    .await?;
    drop(lookup_verifier);

    let percentile = |p: f64| {
        let rank = ((p / 100.0) * (propagation.len() - 1) as f64).round() as usize;
        propagation[rank].as_secs_f64() * 1000.0
    };
    println!(
        "token-verifier benchmark: release build, {cores} cores shared by verifier, Redis, the auth server and the load generator"
    );
    println!(
        "closed loop, {CONNECTIONS} keep-alive connections, GET /verify; every scenario {}s after a 2s warm-up",
        measure.as_secs()
    );
    println!();
    let row = |name: &str, measured: &Measured| {
        let report = &measured.report;
        println!(
            "{name:<58}{:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   {:>6.1} us CPU/req   ({} failures)",
            report.rate(),
            report.percentile_ms(50.0),
            report.percentile_ms(99.0),
            measured.cpu_us_per_request,
            report.failures
        );
    };
    row("ceiling: poem handler answering 200", &trivial);
    row(
        "ceiling: handler doing only the RS256 signature check",
        &signature,
    );
    row("(a) verifier, index mode, one token reused", &reused);
    row("(b) verifier, cache off, 1,000 distinct tokens", &fresh);
    row(
        "(c) verifier, per-request Redis lookup, one token reused",
        &lookup,
    );
    println!();
    let ratio = |ours: &Measured, ceiling: &Measured| {
        format!(
            "{:>6.1} % of its throughput, {:>6.1} % of its CPU efficiency",
            100.0 * ours.report.rate() / ceiling.report.rate(),
            100.0 * ceiling.cpu_us_per_request / ours.cpu_us_per_request
        )
    };
    println!(
        "(a) / trivial ceiling            {}   (target >= 80 %)",
        ratio(&reused, &trivial)
    );
    println!(
        "(b) / signature-only ceiling     {}   (target >= 90 %)",
        ratio(&fresh, &signature)
    );
    println!(
        "index mode / lookup mode         {:>6.2} x   (target > 1)",
        reused.report.rate() / lookup.report.rate()
    );
    println!(
        "Redis commands per verification  {:>8.4}   ({calls} commands over {} verifications in (a); target 0)",
        calls as f64 / reused.report.requests as f64,
        reused.report.requests
    );
    println!(
        "resident memory under load (a)   {rss_under_load:>6.1} MiB with {entries} revocations indexed (target < 24 MiB)"
    );
    println!(
        "start to ready                   {:>6.1} ms with an empty stream, {:.1} ms with {REVOCATIONS} revocations to load (target < 200 ms)",
        ready_empty.as_secs_f64() * 1000.0,
        ready.as_secs_f64() * 1000.0
    );
    println!(
        "logout answered -> rejected      p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms over {PROPAGATION_SAMPLES} logouts (target p99 < 50 ms)",
        percentile(50.0),
        percentile(99.0),
        propagation
            .last()
            .map_or(f64::NAN, |max| max.as_secs_f64() * 1000.0)
    );
    drop(server);
    drop(redis);
    Ok(())
}

async fn reqwest_text(url: &str) -> anyhow::Result<String> {
    Ok(reqwest::get(url).await?.text().await?)
}
