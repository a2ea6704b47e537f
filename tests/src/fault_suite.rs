//! The fault-injection suite: a platform of three server replicas and three sidecars on its own
//! PostgreSQL and Redis runs the mixed [`crate::load`] while one fault is injected, held and
//! healed; the report says what was answered before, during and after, what broke a promise, and
//! how long the platform took to recover by itself. The test suite asserts the promises; the bench
//! (`platform-bench faults`) prints the same runs as figures.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use auth_server::rate_limit::RateLimit;
use poem::http::StatusCode;
use poem::{Response, Route, handler};

use crate::keys::TestKeys;
use crate::load::{HANG, Ledger, Load, Phase, Targets};
use crate::postgres::PostgresServer;
use crate::redis::RedisServer;
use crate::sentinel::{MASTER, SentinelGroup};
use crate::server::{TestServer, start};
use crate::service::RunningService;
use crate::verifier::{TestVerifier, start_verifier, verifier_settings};
use crate::{TestDatabase, migrated_database};

/// The sidecars' grace: how long one that cannot hear from Redis keeps vouching for its index.
const GRACE: Duration = Duration::from_secs(2);
/// How long a lasting fault is held: longer than every timeout and the grace.
const HOLD: Duration = Duration::from_secs(6);
const BEFORE: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(2);
/// Past this, the platform did not recover by itself.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Redis `kill -9`, restarted empty.
    RedisKilled,
    /// Redis frozen (SIGSTOP) past every timeout, then SIGCONT.
    RedisFrozen,
    /// Redis `FLUSHALL`.
    RedisFlushed,
    /// The Redis primary `kill -9`ed; Sentinel promotes the replica.
    SentinelFailover,
    /// PostgreSQL restarted (every connection closed).
    PostgresRestarted,
    /// PostgreSQL frozen (postmaster and backends SIGSTOPped), then SIGCONT.
    PostgresFrozen,
    /// The JWKS endpoint the sidecars fetch from answers 503.
    JwksDown,
    /// One server replica `kill -9`ed mid-request (and taken out of the rotation).
    ReplicaKilled,
    /// One sidecar's clock five minutes ahead (libfaketime).
    ClockAhead,
    /// One sidecar's clock five minutes behind (libfaketime).
    ClockBehind,
}

impl Fault {
    /// Every fault, in the order the suite runs them.
    pub const ALL: [Fault; 10] = [
        Fault::RedisKilled,
        Fault::RedisFrozen,
        Fault::RedisFlushed,
        Fault::SentinelFailover,
        Fault::PostgresRestarted,
        Fault::PostgresFrozen,
        Fault::JwksDown,
        Fault::ReplicaKilled,
        Fault::ClockAhead,
        Fault::ClockBehind,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Fault::RedisKilled => "redis kill -9, restarted empty",
            Fault::RedisFrozen => "redis frozen 6 s",
            Fault::RedisFlushed => "redis FLUSHALL",
            Fault::SentinelFailover => "sentinel failover (primary kill -9)",
            Fault::PostgresRestarted => "postgres restart",
            Fault::PostgresFrozen => "postgres frozen 6 s",
            Fault::JwksDown => "JWKS endpoint down 6 s",
            Fault::ReplicaKilled => "server replica kill -9",
            Fault::ClockAhead => "sidecar clock +5 min",
            Fault::ClockBehind => "sidecar clock -5 min",
        }
    }

    fn skew(self) -> Option<&'static str> {
        match self {
            Fault::ClockAhead => Some("+5m"),
            Fault::ClockBehind => Some("-5m"),
            _ => None,
        }
    }
}

/// What one fault run showed.
pub struct Report {
    /// The fault.
    pub fault: Fault,
    /// Answers by phase and kind.
    pub answers: BTreeMap<(Phase, String), u64>,
    /// Broken promises seen by the load (500s, hangs, 503s without `Retry-After`, revoked tokens
    /// accepted after the grace).
    pub violations: Vec<String>,
    /// Acknowledged registrations that could not log in afterwards.
    pub lost_registrations: Vec<String>,
    /// Acknowledged logouts whose token a sidecar accepted afterwards.
    pub revived_tokens: usize,
    /// Acknowledged registrations and logouts checked afterwards.
    pub checked: (usize, usize),
    /// Revoked tokens accepted within the grace (allowed by the contract; reported), and the
    /// longest after the logout's acknowledgement one was.
    pub accepted_within_grace: (usize, Duration),
    /// From the heal (or an instantaneous fault) until every operation had succeeded again.
    pub recovery: Option<Duration>,
    /// The longest any operation went without a success around the fault, and which one.
    pub outage: Option<(&'static str, Duration)>,
}

impl Report {
    /// Whether every promise was kept.
    pub fn kept(&self) -> bool {
        self.violations.is_empty()
            && self.lost_registrations.is_empty()
            && self.revived_tokens == 0
            && (self.recovery.is_some() || self.fault.skew().is_some())
    }

    /// `operation status×count` for one phase.
    pub fn summary(&self, phase: Phase) -> String {
        self.answers
            .iter()
            .filter(|((at, _), _)| *at == phase)
            .map(|((_, answer), count)| format!("{answer}×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The report as printed by the test and the bench.
    pub fn print(&self) {
        println!("== {} ==", self.fault.name());
        for (phase, label) in [
            (Phase::Before, "before"),
            (Phase::During, "during"),
            (Phase::After, "after"),
        ] {
            println!("  {label:<7} {}", self.summary(phase));
        }
        let recovery = match (self.recovery, self.outage) {
            (Some(recovery), Some((operation, outage))) => format!(
                "{:.2} s after the heal; longest without a success: {operation} {:.2} s",
                recovery.as_secs_f64(),
                outage.as_secs_f64()
            ),
            _ if self.fault.skew().is_some() => "n/a (a lasting condition)".to_owned(),
            _ => format!("NONE within {RECOVERY_LIMIT:?}"),
        };
        println!(
            "  recovery {recovery}; checked afterwards: {} registrations ({} lost), {} revoked tokens \
             ({} accepted); accepted while still propagating (within the {GRACE:?} grace): {}, at \
             most {:.1} ms after the logout; violations: {}",
            self.checked.0,
            self.lost_registrations.len(),
            self.checked.1,
            self.revived_tokens,
            self.accepted_within_grace.0,
            self.accepted_within_grace.1.as_secs_f64() * 1000.0,
            if self.violations.is_empty() {
                "none".to_owned()
            } else {
                self.violations.join("; ")
            }
        );
    }
}

/// Where Redis is for this run.
enum RedisTier {
    Single(RedisServer),
    Sentinel(SentinelGroup),
}

impl RedisTier {
    fn url(&self) -> String {
        match self {
            RedisTier::Single(redis) => redis.url(0),
            RedisTier::Sentinel(_) => format!("redis://{MASTER}/0"),
        }
    }

    fn sentinels(&self) -> Vec<String> {
        match self {
            RedisTier::Single(_) => Vec::new(),
            RedisTier::Sentinel(group) => group.addresses(),
        }
    }
}

/// The JWKS as the sidecars fetch it, with a switch that takes the endpoint down.
struct JwksRelay {
    url: String,
    down: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl JwksRelay {
    async fn start(jwks: String) -> Self {
        let down = Arc::new(AtomicBool::new(false));
        let serving = down.clone();
        #[handler]
        fn keys(poem::web::Data(state): poem::web::Data<&(Arc<AtomicBool>, String)>) -> Response {
            if state.0.load(Ordering::Acquire) {
                return Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .finish();
            }
            Response::builder()
                .content_type("application/json")
                .body(state.1.clone())
        }
        use poem::EndpointExt;
        let app = Route::new().at("/jwks.json", keys.data((serving, jwks)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("an address"));
        let task = crate::process::serve_in_background(listener, app);
        Self {
            url,
            down,
            _task: task,
        }
    }
}

/// Everything one run starts.
struct Stage {
    redis: RedisTier,
    postgres: Option<PostgresServer>,
    keys: TestKeys,
    db: TestDatabase,
    servers: Vec<TestServer>,
    process_replica: Option<(String, RunningService)>,
    sidecars: Vec<TestVerifier>,
    process_sidecar: Option<(String, RunningService)>,
    jwks: JwksRelay,
}

fn unlimited() -> RateLimit {
    "off".parse().expect("off is a rate limit")
}

impl Stage {
    async fn start(fault: Fault) -> Self {
        let redis = if fault == Fault::SentinelFailover {
            RedisTier::Sentinel(
                tokio::task::spawn_blocking(SentinelGroup::start)
                    .await
                    .expect("sentinels"),
            )
        } else {
            RedisTier::Single(RedisServer::start())
        };
        let (postgres, db) = if matches!(fault, Fault::PostgresRestarted | Fault::PostgresFrozen) {
            let postgres = tokio::task::spawn_blocking(PostgresServer::start_dedicated)
                .await
                .expect("postgres");
            let url = postgres.url("postgres");
            let migrated = crate::command::run("migrator", &["up"], &[("DATABASE_URL", &url)]).await;
            assert_eq!(migrated.code, 0, "{}", migrated.stderr);
            let db = TestDatabase {
                name: "postgres".to_owned(),
                url,
            };
            (Some(postgres), db)
        } else {
            (None, migrated_database().await)
        };
        let keys = TestKeys::new(jsonwebtoken::Algorithm::RS256);
        let mut servers = Vec::new();
        for _ in 0..3 {
            servers.push(
                start(db.clone(), &redis.url(), |settings| {
                    settings.keys_dir = Some(keys.dir());
                    settings.redis_sentinels = redis.sentinels();
                    // As the README advises with Sentinel: a revocation waits for the replica.
                    settings.redis_wait_replicas = u32::from(fault == Fault::SentinelFailover);
                    let limits = &mut settings.rate_limits;
                    limits.register_per_ip = unlimited();
                    limits.login_per_ip = unlimited();
                    limits.login_per_account = unlimited();
                    limits.refresh_per_ip = unlimited();
                })
                .await,
            );
        }
        let jwks = JwksRelay::start(servers[0].get_text("/.well-known/jwks.json").await).await;
        let mut sidecars = Vec::new();
        for _ in 0..2 {
            let mut settings = verifier_settings(&jwks.url, &redis.url());
            settings.redis_sentinels = redis.sentinels();
            settings.redis_grace = GRACE;
            sidecars.push(start_verifier(settings, true).await);
        }
        let mut stage = Self {
            redis,
            postgres,
            keys,
            db,
            servers,
            process_replica: None,
            sidecars,
            process_sidecar: None,
            jwks,
        };
        if fault == Fault::ReplicaKilled {
            stage.process_replica = Some(stage.start_process_replica().await);
        }
        stage.process_sidecar = Some(stage.start_process_sidecar(fault.skew()).await);
        stage
    }

    /// A replica as a real process, so that it can be killed like one.
    async fn start_process_replica(&self) -> (String, RunningService) {
        let listen = format!("127.0.0.1:{}", crate::process::free_port());
        let keys = self.keys.dir().display().to_string();
        let redis = self.redis.url();
        let env = [
            ("DATABASE_URL", self.db.url.as_str()),
            ("REDIS_URL", redis.as_str()),
            ("AUTH_LISTEN", listen.as_str()),
            ("AUTH_KEYS_DIR", keys.as_str()),
            ("AUTH_BCRYPT_COST", "4"),
            ("AUTH_RATE_LIMITS__REGISTER_PER_IP", "off"),
            ("AUTH_RATE_LIMITS__LOGIN_PER_IP", "off"),
            ("AUTH_RATE_LIMITS__LOGIN_PER_ACCOUNT", "off"),
            ("AUTH_RATE_LIMITS__REFRESH_PER_IP", "off"),
        ];
        let replica = RunningService::start("auth-server", "AUTH_", &env).await;
        replica.wait_for("/health/ready", 200).await;
        (format!("http://{listen}"), replica)
    }

    /// A sidecar as a real process, its clock skewed by libfaketime when `skew` is given.
    async fn start_process_sidecar(&self, skew: Option<&str>) -> (String, RunningService) {
        let listen = format!("127.0.0.1:{}", crate::process::free_port());
        let redis = self.redis.url();
        let sentinels = self.redis.sentinels().join(",");
        let grace = format!("{}s", GRACE.as_secs());
        let mut env = vec![
            ("REDIS_URL", redis.as_str()),
            ("VERIFIER_LISTEN", listen.as_str()),
            ("VERIFIER_JWKS_URL", self.jwks.url.as_str()),
            ("VERIFIER_REDIS_GRACE", grace.as_str()),
            ("VERIFIER_REDIS_SENTINELS", sentinels.as_str()),
        ];
        if let Some(skew) = skew {
            env.extend([
                ("LD_PRELOAD", FAKETIME),
                ("FAKETIME", skew),
                // Timers and timeouts keep real time; only the wall clock is off.
                ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ]);
        }
        let sidecar = RunningService::start("token-verifier", "VERIFIER_", &env).await;
        sidecar.wait_for("/health/ready", 200).await;
        (format!("http://{listen}"), sidecar)
    }

    fn targets(&self) -> Arc<Targets> {
        let mut servers: Vec<String> = self.servers.iter().map(|server| server.url.clone()).collect();
        servers.extend(self.process_replica.iter().map(|(url, _)| url.clone()));
        let mut sidecars: Vec<String> = self.sidecars.iter().map(|sidecar| sidecar.url.clone()).collect();
        sidecars.extend(self.process_sidecar.iter().map(|(url, _)| url.clone()));
        Arc::new(Targets {
            servers: RwLock::new(servers),
            sidecars,
            // The grace, plus a poll of the stream follower.
            enforced_after: GRACE + Duration::from_secs(1),
        })
    }

    /// Injects `fault`; returns once it is healed (or at once when it is instantaneous).
    async fn inject(&mut self, fault: Fault, targets: &Targets) {
        match fault {
            Fault::RedisKilled => self.single_redis().restart(),
            Fault::RedisFrozen => {
                self.single_redis().freeze();
                tokio::time::sleep(HOLD).await;
                self.single_redis().thaw();
            }
            Fault::RedisFlushed => {
                let mut conn = self.servers[0].redis().await;
                let () = redis::cmd("FLUSHALL")
                    .query_async(&mut conn)
                    .await
                    .expect("FLUSHALL");
            }
            Fault::SentinelFailover => {
                let RedisTier::Sentinel(group) = &mut self.redis else {
                    unreachable!("the failover runs on a Sentinel group")
                };
                let old = group.primary.port();
                group.primary.kill();
                let deadline = Instant::now() + RECOVERY_LIMIT;
                while group.primary_port() == Some(old) {
                    assert!(Instant::now() < deadline, "Sentinel did not fail over");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Fault::PostgresRestarted => {
                let postgres = self.postgres.as_ref().expect("a dedicated PostgreSQL");
                tokio::task::block_in_place(|| postgres.restart());
            }
            Fault::PostgresFrozen => {
                let postgres = self.postgres.as_ref().expect("a dedicated PostgreSQL");
                postgres.freeze();
                tokio::time::sleep(HOLD).await;
                postgres.thaw();
            }
            Fault::JwksDown => {
                self.jwks.down.store(true, Ordering::Release);
                tokio::time::sleep(HOLD).await;
                self.jwks.down.store(false, Ordering::Release);
            }
            Fault::ReplicaKilled => {
                let (url, replica) = self.process_replica.take().expect("a process replica");
                replica.kill().await;
                targets.servers.write().unwrap().retain(|server| *server != url);
            }
            Fault::ClockAhead | Fault::ClockBehind => tokio::time::sleep(HOLD).await,
        }
    }

    fn single_redis(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            RedisTier::Single(redis) => redis,
            RedisTier::Sentinel(_) => unreachable!("a single Redis"),
        }
    }
}

/// Runs the load through `fault` and checks afterwards that every acknowledged registration can
/// log in and every acknowledged logout's token is refused by every sidecar.
pub async fn run(fault: Fault) -> Report {
    let mut stage = Stage::start(fault).await;
    let targets = stage.targets();
    let load = Load::start(targets.clone());
    tokio::time::sleep(BEFORE).await;
    load.ledger.enter(Phase::During);
    let injected = Instant::now();
    stage.inject(fault, &targets).await;
    let healed = Instant::now();
    load.ledger.enter(Phase::After);
    let recovered = if fault.skew().is_some() {
        tokio::time::sleep(AFTER).await;
        None
    } else {
        wait_for_recovery(&load.ledger, healed).await
    };
    tokio::time::sleep(AFTER).await;
    let ledger = load.stop().await;
    let (lost_registrations, revived_tokens) = check_acknowledged(&stage, &targets, &ledger).await;
    Report {
        fault,
        answers: ledger.answers(),
        violations: ledger.violations(),
        lost_registrations,
        revived_tokens,
        checked: (ledger.users().len(), ledger.revoked().len()),
        accepted_within_grace: ledger.accepted_within_grace(),
        recovery: recovered.map(|at| at - healed),
        outage: recovered.and_then(|at| ledger.longest_gap((injected, at))),
    }
}

async fn wait_for_recovery(ledger: &Ledger, healed: Instant) -> Option<Instant> {
    while healed.elapsed() < RECOVERY_LIMIT {
        if let Some(at) = ledger.recovered_since(healed) {
            return Some(at);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Every acknowledged registration logs in; every acknowledged logout's token is refused.
async fn check_acknowledged(stage: &Stage, targets: &Targets, ledger: &Ledger) -> (Vec<String>, usize) {
    let server = &stage.servers[0];
    let mut lost = Vec::new();
    for email in ledger.users() {
        let login = server
            .post(
                "/api/auth/login",
                &serde_json::json!({ "email": email, "password": "correct horse battery staple" }),
            )
            .await;
        if login.status() != 200 {
            lost.push(email);
        }
    }
    let client = reqwest::Client::builder()
        .timeout(HANG)
        .build()
        .expect("a client");
    let mut revived = 0;
    for token in ledger.revoked() {
        for sidecar in &targets.sidecars {
            let answer = crate::load::verify_request(&client, sidecar, &token)
                .send()
                .await
                .expect("the sidecar answers");
            if answer.status() == 200 {
                revived += 1;
            }
        }
    }
    (lost, revived)
}
