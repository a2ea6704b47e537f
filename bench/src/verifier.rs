//! The token verifier under load, side by side with its ceilings, in one run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::{TestKeys, claims};
use platform_tests::process::{free_port, get_text};
use platform_tests::service::RunningService;
use serde_json::{Value, json};

use crate::load::{self, Connection, Report, request};
use crate::platform::start_auth_server;

const CONNECTIONS: usize = 64;
const REVOCATIONS: usize = 100_000;
const DISTINCT_TOKENS: usize = 1_000;
const PROPAGATION_SAMPLES: usize = 200;
const ROUNDS: u32 = 3;
const STARTS: usize = 5;
const WARMUP: Duration = Duration::from_secs(1);
/// The original request as nginx describes it (the verifier's default), sent to the ceilings too.
const ORIGINAL_REQUEST: [(&str, &str); 2] = [("x-original-method", "GET"), ("x-original-uri", "/")];

/// A child process serving one of the ceilings, killed when dropped.
struct Ceiling {
    // Held only so that dropping the ceiling kills the process.
    _process: tokio::process::Child,
}

impl Ceiling {
    /// Runs this binary's hidden `subcommand` on a free port, followed by `args`.
    async fn start(subcommand: &str, args: &[&str]) -> anyhow::Result<(Self, Target)> {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .arg(subcommand)
            .arg(addr.to_string())
            .args(args)
            .kill_on_drop(true)
            .spawn()?;
        wait_for_port(port).await?;
        let target = Target {
            addr,
            pid: child.id().unwrap_or(0),
        };
        Ok((Self { _process: child }, target))
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

/// A `token-verifier` process with `env`, its target and how long it took to become ready.
pub(crate) async fn verifier(env: &[(&str, &str)]) -> (RunningService, Target, Duration) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut full: Vec<(&str, &str)> = vec![("VERIFIER_LISTEN", &listen), ("VERIFIER_LOG_LEVEL", "warn")];
    full.extend_from_slice(env);
    let started = Instant::now();
    let service = RunningService::start("token-verifier", "VERIFIER_", &full).await;
    service.wait_for_fast("/health/ready", 200).await;
    let ready = started.elapsed();
    let target = Target {
        addr: listen.parse().expect("a socket address"),
        pid: service.pid().unwrap_or(0),
    };
    (service, target, ready)
}

/// Runs `/verify` with one bearer per worker (`tokens[worker % len]`, or round-robin through all
/// of them when `rotate`), after a warm-up of [`WARMUP`].
async fn hammer(
    addr: SocketAddr,
    tokens: Arc<Vec<String>>,
    rotate: bool,
    measure: Duration,
) -> anyhow::Result<Report> {
    load::run(
        addr,
        CONNECTIONS,
        WARMUP,
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
                        &[
                            ("authorization", &bearer),
                            ORIGINAL_REQUEST[0],
                            ORIGINAL_REQUEST[1],
                        ],
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

/// Load runs with the CPU the serving process spent on them.
struct Measured {
    report: Report,
    cpu_seconds: f64,
    // Requests including the warm-ups, whose CPU time is part of `cpu_seconds`.
    served: f64,
}

impl Measured {
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.served
    }

    fn merge(mut self, other: Measured) -> Measured {
        let report = &mut self.report;
        report.requests += other.report.requests;
        report.failures += other.report.failures;
        report.elapsed += other.report.elapsed;
        report.latencies_us.extend(other.report.latencies_us);
        report.latencies_us.sort_unstable();
        self.cpu_seconds += other.cpu_seconds;
        self.served += other.served;
        self
    }
}

/// What a serving process is: its address and its pid.
#[derive(Clone, Copy)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) pid: u32,
}

async fn measured(
    target: Target,
    tokens: &Arc<Vec<String>>,
    rotate: bool,
    measure: Duration,
) -> anyhow::Result<Measured> {
    let before = cpu_seconds(target.pid);
    let report = hammer(target.addr, tokens.clone(), rotate, measure).await?;
    let cpu_seconds = cpu_seconds(target.pid) - before;
    let served = report.requests as f64 * (1.0 + WARMUP.as_secs_f64() / report.elapsed.as_secs_f64());
    Ok(Measured {
        report,
        cpu_seconds,
        served,
    })
}

/// One process's part of an interleaved run: its totals and its rate in each round.
struct Interleaved {
    total: Measured,
    rates: Vec<f64>,
}

impl Interleaved {
    /// This process's rate as a share of `ceiling`'s: overall, and in each round.
    fn share_of(&self, ceiling: &Interleaved) -> (f64, Vec<f64>) {
        let rounds = self
            .rates
            .iter()
            .zip(&ceiling.rates)
            .map(|(ours, top)| 100.0 * ours / top)
            .collect();
        (
            100.0 * self.total.report.rate() / ceiling.total.report.rate(),
            rounds,
        )
    }
}

/// Scenarios and the ceilings they are compared with, measured in turn in [`ROUNDS`] rounds of
/// slices (A, B, …, A, B, …), so that a change in the machine's speed during the run (it is a
/// shared VM) affects all of them alike.
async fn interleave<const N: usize>(
    targets: [Target; N],
    tokens: &Arc<Vec<String>>,
    rotate: bool,
    measure: Duration,
) -> anyhow::Result<[Interleaved; N]> {
    let slice = measure / ROUNDS;
    let mut parts: Vec<Option<Interleaved>> = (0..N).map(|_| None).collect();
    for _ in 0..ROUNDS {
        for (target, part) in targets.iter().zip(parts.iter_mut()) {
            let run = measured(*target, tokens, rotate, slice).await?;
            let rate = run.report.rate();
            *part = Some(match part.take() {
                None => Interleaved {
                    total: run,
                    rates: vec![rate],
                },
                Some(mut sofar) => {
                    sofar.rates.push(rate);
                    sofar.total = sofar.total.merge(run);
                    sofar
                }
            });
        }
    }
    let parts: Vec<Interleaved> = parts.into_iter().flatten().collect();
    parts
        .try_into()
        .map_err(|_| anyhow::anyhow!("no rounds were measured"))
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
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
    let credentials = json!({"email": "bench@example.com", "password": "benchmark password 1"});
    let (status, registered) =
        json_post(&mut api, server_addr, "/api/auth/register", None, &credentials).await?;
    anyhow::ensure!(status == 201, "registration answered {status}");
    let user_id = text_at(&registered, &["user", "id"]);
    let session = text_at(&registered, &["session", "id"]);
    let one_token = Arc::new(vec![text_at(&registered, &["tokens", "access_token"])]);
    let distinct = Arc::new(
        (0..DISTINCT_TOKENS)
            .map(|_| keys.sign(&keys.header(), &claims(&user_id, &session)))
            .collect::<Vec<_>>(),
    );

    // (a) index mode, one token reused, against the trivial ceiling.
    let (trivial_ceiling, trivial_target) = Ceiling::start("ceiling-trivial", &[]).await?;
    let common = [
        ("REDIS_URL", redis_url.as_str()),
        ("VERIFIER_JWKS_URL", jwks_url.as_str()),
    ];
    let (index_verifier, index_target, ready) = verifier(&common).await;
    let calls_before = redis_calls(&mut conn).await?;
    let [trivial, reused] = interleave([trivial_target, index_target], &one_token, false, measure).await?;
    drop(trivial_ceiling);
    let calls = redis_calls(&mut conn).await?.saturating_sub(calls_before);
    let rss_under_load = rss_mib(index_target.pid);
    let metrics = get_text(
        &reqwest::Client::new(),
        &format!("{}/metrics", index_verifier.admin_url),
    )
    .await;
    let entries = metrics
        .lines()
        .find_map(|line| line.strip_prefix("verifier_revocation_index_entries "))
        .unwrap_or("?")
        .to_owned();

    // Propagation: logout answered by the server, until the sidecar refuses the token.
    let mut propagation = Vec::with_capacity(PROPAGATION_SAMPLES);
    let mut probe = Connection::open(index_target.addr).await?;
    for _ in 0..PROPAGATION_SAMPLES {
        let (_, login) = json_post(&mut api, server_addr, "/api/auth/login", None, &credentials).await?;
        let token = text_at(&login, &["tokens", "access_token"]);
        let verify = || {
            let bearer = format!("Bearer {token}");
            request(
                "GET",
                index_target.addr,
                "/verify",
                &[
                    ("authorization", &bearer),
                    ORIGINAL_REQUEST[0],
                    ORIGINAL_REQUEST[1],
                ],
                Bytes::new(),
            )
        };
        anyhow::ensure!(probe.send(verify()).await?.0 == 200, "a fresh token was refused");
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
            if probe.send(verify()).await?.0 == 401 {
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

    // (b) every request fully verified (the cache off, 1,000 distinct tokens round-robin) against
    // two handlers doing nothing but the RS256 signature check: as `jsonwebtoken::crypto::verify`
    // does it (the target's ceiling), and with the key parsed once, as the verifier does it.
    let jwks_path = jwks_file.path().display().to_string();
    let (jsonwebtoken_ceiling, jsonwebtoken_target) =
        Ceiling::start("ceiling-signature", &[&jwks_path, "jsonwebtoken"]).await?;
    let (parsed_ceiling, parsed_target) =
        Ceiling::start("ceiling-signature", &[&jwks_path, "parsed"]).await?;
    let mut no_cache_env = common.to_vec();
    no_cache_env.push(("VERIFIER_CACHE_SIZE", "0"));
    let (no_cache_verifier, no_cache_target, _) = verifier(&no_cache_env).await;
    let [signature, parsed_signature, fresh] = interleave(
        [jsonwebtoken_target, parsed_target, no_cache_target],
        &distinct,
        true,
        measure,
    )
    .await?;
    drop((jsonwebtoken_ceiling, parsed_ceiling, no_cache_verifier));

    // Start-up with the revocations to load, repeated: one start is a single noisy sample.
    let mut starts = vec![ready];
    for _ in 1..STARTS {
        let (service, _, ready) = verifier(&common).await;
        drop(service);
        starts.push(ready);
    }
    starts.sort();
    let starts_ms: Vec<String> = starts
        .iter()
        .map(|ready| format!("{:.1}", ready.as_secs_f64() * 1000.0))
        .collect();

    // (c) per-request Redis lookups, one token reused.
    let mut lookup_env = common.to_vec();
    lookup_env.push(("VERIFIER_REVOCATION_MODE", "lookup"));
    let (lookup_verifier, lookup_target, _) = verifier(&lookup_env).await;
    let lookup = measured(lookup_target, &one_token, false, measure).await?;
    drop(lookup_verifier);

    let percentile = |p: f64| {
        let rank = ((p / 100.0) * (propagation.len() - 1) as f64).round() as usize;
        propagation[rank].as_secs_f64() * 1000.0
    };
    println!(
        "token-verifier benchmark: release build, {cores} cores shared by verifier, Redis, the auth server and the load generator"
    );
    println!(
        "closed loop, {CONNECTIONS} keep-alive connections, GET /verify, {}s per scenario measured after {}s warm-ups",
        measure.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "(a) and (b) take turns with their ceilings in {ROUNDS} rounds of {}s each (ceiling, scenario, ceiling, ...)",
        (measure / ROUNDS).as_secs_f64()
    );
    println!();
    let row = |name: &str, measured: &Measured| {
        let report = &measured.report;
        println!(
            "{name:<66}{:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   {:>6.1} us CPU/req   ({} failures)",
            report.rate(),
            report.percentile_ms(50.0),
            report.percentile_ms(99.0),
            measured.cpu_us_per_request(),
            report.failures
        );
    };
    row("ceiling: poem handler answering 200", &trivial.total);
    row("(a) verifier, index mode, one token reused", &reused.total);
    row(
        "ceiling: only the RS256 check, jsonwebtoken::crypto::verify",
        &signature.total,
    );
    row(
        "strict ceiling: only the RS256 check, key parsed once",
        &parsed_signature.total,
    );
    row("(b) verifier, cache off, 1,000 distinct tokens", &fresh.total);
    row(
        "(c) verifier, per-request Redis lookup, one token reused",
        &lookup,
    );
    println!();
    let ratio = |ours: &Interleaved, ceiling: &Interleaved| {
        let (share, rounds) = ours.share_of(ceiling);
        let rounds: Vec<String> = rounds.iter().map(|share| format!("{share:.1}")).collect();
        format!(
            "{share:>6.1} % of its throughput (rounds: {} %), {:>6.1} % of its CPU efficiency",
            rounds.join(", "),
            100.0 * ceiling.total.cpu_us_per_request() / ours.total.cpu_us_per_request()
        )
    };
    println!(
        "(a) / trivial ceiling             {}   (target >= 80 %)",
        ratio(&reused, &trivial)
    );
    println!(
        "(b) / signature-only ceiling      {}   (target >= 90 %)",
        ratio(&fresh, &signature)
    );
    println!(
        "(b) / strict signature ceiling    {}",
        ratio(&fresh, &parsed_signature)
    );
    println!(
        "index mode / lookup mode         {:>6.2} x   (target > 1)",
        reused.total.report.rate() / lookup.report.rate()
    );
    println!(
        "Redis commands per verification  {:>8.4}   ({calls} commands over {} verifications in (a); target 0)",
        calls as f64 / reused.total.report.requests as f64,
        reused.total.report.requests
    );
    println!(
        "resident memory under load (a)   {rss_under_load:>6.1} MiB with {entries} revocations indexed (target < 24 MiB)"
    );
    println!(
        "start to ready                   {:>6.1} ms with an empty stream; with {REVOCATIONS} revocations to load: median {} ms, slowest {} ms of {STARTS} starts ({} ms) (target < 200 ms)",
        ready_empty.as_secs_f64() * 1000.0,
        starts_ms[STARTS / 2],
        starts_ms[STARTS - 1],
        starts_ms.join(", ")
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

/// The string at `path` in `value` (empty when absent: the caller's next request then fails loudly).
fn text_at(value: &Value, path: &[&str]) -> String {
    path.iter()
        .fold(value, |value, key| &value[*key])
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
