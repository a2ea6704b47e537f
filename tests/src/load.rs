//! A mixed load for fault injection — registrations, logins, refreshes, logouts and verifications
//! against several server replicas and sidecars — and the ledger of what it saw: every answer by
//! kind, every acknowledged write (to check afterwards that it survived) and every breach of the
//! platform's promises (a 500, a hang, a 503 without `Retry-After`, a revoked token accepted).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder};
use serde_json::{Value, json};

/// Longer than any answer may take: only a hang reaches it.
pub const HANG: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery staple";
const WORKERS: usize = 4;

/// Where the load goes: the replicas behind the load balancer (a killed one is taken out, as its
/// Service endpoint would be) and the sidecars.
pub struct Targets {
    /// Base URLs of the server replicas in rotation.
    pub servers: RwLock<Vec<String>>,
    /// Base URLs of the sidecars.
    pub sidecars: Vec<String>,
    /// How long after its logout was acknowledged a token must be refused everywhere: the
    /// sidecars' grace (`VERIFIER_REDIS_GRACE`), within which one that has not heard from Redis
    /// still vouches for its index.
    pub enforced_after: Duration,
}

/// Which part of a fault the load is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Before the fault.
    Before = 0,
    /// While it lasts.
    During = 1,
    /// After it was healed.
    After = 2,
}

/// What the load saw.
#[derive(Default)]
pub struct Ledger {
    phase: AtomicU8,
    answers: Mutex<BTreeMap<(Phase, String), u64>>,
    violations: Mutex<Vec<String>>,
    users: Mutex<Vec<String>>,
    revoked: Mutex<Vec<(String, Instant)>>,
    last_success: Mutex<BTreeMap<&'static str, Instant>>,
    successes: Mutex<Vec<(&'static str, Instant)>>,
    accepted_within_grace: AtomicUsize,
    latest_acceptance: Mutex<Duration>,
}

impl Ledger {
    /// Answers by phase and `"{operation} {status}"` (or `… connection-lost`).
    pub fn answers(&self) -> BTreeMap<(Phase, String), u64> {
        self.answers.lock().unwrap().clone()
    }

    /// Every broken promise, described.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// The addresses whose registration was acknowledged.
    pub fn users(&self) -> Vec<String> {
        self.users.lock().unwrap().clone()
    }

    /// The access tokens whose logout was acknowledged.
    pub fn revoked(&self) -> Vec<String> {
        self.revoked
            .lock()
            .unwrap()
            .iter()
            .map(|(token, _)| token.clone())
            .collect()
    }

    /// Revoked tokens a sidecar still accepted within the grace (allowed: the revocation was on
    /// its way to that sidecar), and the longest after its acknowledgement one still was.
    pub fn accepted_within_grace(&self) -> (usize, Duration) {
        (
            self.accepted_within_grace.load(Ordering::Relaxed),
            *self.latest_acceptance.lock().unwrap(),
        )
    }

    /// Moves the load into `phase`.
    pub fn enter(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// The longest time one operation went without a success, over gaps that reach into
    /// `window` (the fault and its recovery), and that operation.
    pub fn longest_gap(&self, window: (Instant, Instant)) -> Option<(&'static str, Duration)> {
        let successes = self.successes.lock().unwrap();
        OPERATIONS
            .iter()
            .filter_map(|operation| {
                let mut times: Vec<Instant> = successes
                    .iter()
                    .filter(|(name, _)| name == operation)
                    .map(|(_, at)| *at)
                    .collect();
                times.sort();
                times
                    .windows(2)
                    .filter(|pair| pair[1] >= window.0 && pair[0] <= window.1)
                    .map(|pair| pair[1] - pair[0])
                    .max()
                    .map(|gap| (*operation, gap))
            })
            .max_by_key(|(_, gap)| *gap)
    }

    /// When every operation had succeeded again after `since`, if it has.
    pub fn recovered_since(&self, since: Instant) -> Option<Instant> {
        let last = self.last_success.lock().unwrap();
        OPERATIONS
            .iter()
            .map(|operation| last.get(operation).copied().filter(|at| *at >= since))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Before,
            1 => Phase::During,
            _ => Phase::After,
        }
    }

    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }

    fn count(&self, answer: String) {
        *self
            .answers
            .lock()
            .unwrap()
            .entry((self.phase(), answer))
            .or_default() += 1;
    }
}

const OPERATIONS: [&str; 5] = ["register", "login", "refresh", "logout", "verify"];

/// A running load.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// What it saw so far.
    pub ledger: Arc<Ledger>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the workers.
    pub fn start(targets: Arc<Targets>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Ledger::default());
        let client = Client::builder().timeout(HANG).build().expect("an HTTP client");
        let workers = (0..WORKERS)
            .map(|worker| {
                let worker = Worker {
                    id: worker,
                    round: 0,
                    live: None,
                    client: client.clone(),
                    targets: targets.clone(),
                    ledger: ledger.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(worker.run(stop))
            })
            .collect();
        Self {
            stop,
            ledger,
            workers,
        }
    }

    /// Stops the workers (each finishes its request) and returns the ledger.
    pub async fn stop(self) -> Arc<Ledger> {
        self.stop.store(true, Ordering::Release);
        for worker in self.workers {
            worker.await.expect("a load worker ends cleanly");
        }
        self.ledger
    }
}

struct Worker {
    id: usize,
    round: usize,
    // A token of a session never logged out: verified first in every cycle, so sidecars are asked
    // even while the server cannot register anyone.
    live: Option<String>,
    client: Client,
    targets: Arc<Targets>,
    ledger: Arc<Ledger>,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Acquire) {
            self.round += 1;
            if self.cycle().await.is_none() {
                // Something was refused (a fault): do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    fn server(&self) -> String {
        let servers = self.targets.servers.read().unwrap();
        servers[(self.id + self.round) % servers.len()].clone()
    }

    fn sidecar(&self, offset: usize) -> &str {
        let sidecars = &self.targets.sidecars;
        &sidecars[(self.id + self.round + offset) % sidecars.len()]
    }

    /// One user's life: register, verify, log in, refresh, log out, and probe revoked tokens.
    async fn cycle(&mut self) -> Option<()> {
        if let Some(live) = &self.live {
            self.verify(live).await?;
        }
        let email = format!("load-{}@example.com", crate::server::uuid_like());
        let credentials = json!({ "email": email, "password": PASSWORD });
        let registered = self
            .send("register", self.post("/api/auth/register", &credentials), 201)
            .await?;
        self.ledger.users.lock().unwrap().push(email);
        let access = token(&registered, "access_token")?;
        self.verify(&access).await?;
        self.live = Some(access);
        let login = self
            .send("login", self.post("/api/auth/login", &credentials), 200)
            .await?;
        let refreshed = self
            .send(
                "refresh",
                self.post(
                    "/api/auth/refresh",
                    &json!({ "refresh_token": token(&login, "refresh_token")? }),
                ),
                200,
            )
            .await?;
        let access = token(&refreshed, "access_token")?;
        self.verify(&access).await?;
        let logout = self
            .client
            .post(format!("{}/api/auth/logout", self.server()))
            .bearer_auth(&access)
            .json(&json!({}));
        self.send("logout", logout, 204).await?;
        self.ledger.revoked.lock().unwrap().push((access, Instant::now()));
        self.probe_revoked().await;
        Some(())
    }

    fn post(&self, path: &str, body: &Value) -> RequestBuilder {
        self.client.post(format!("{}{path}", self.server())).json(body)
    }

    async fn verify(&self, access: &str) -> Option<()> {
        let request = self.verify_request(self.sidecar(0), access);
        self.send("verify", request, 200).await.map(|_| ())
    }

    fn verify_request(&self, sidecar: &str, access: &str) -> RequestBuilder {
        verify_request(&self.client, sidecar, access)
    }

    /// Sends a few revoked tokens (the newest and an old one) to every sidecar.
    async fn probe_revoked(&self) {
        let sample: Vec<(String, Instant)> = {
            let revoked = self.ledger.revoked.lock().unwrap();
            let old = revoked.get(self.round * 7919 % revoked.len().max(1)).cloned();
            revoked.iter().rev().take(3).cloned().chain(old).collect()
        };
        for (access, acknowledged) in sample {
            for sidecar in &self.targets.sidecars {
                let Ok(answer) = self.verify_request(sidecar, &access).send().await else {
                    continue;
                };
                if answer.status() == 200 {
                    if acknowledged.elapsed() > self.targets.enforced_after {
                        self.ledger.violation(format!(
                            "{sidecar} accepted a token {:?} after its logout was acknowledged",
                            acknowledged.elapsed()
                        ));
                    } else {
                        self.ledger.accepted_within_grace.fetch_add(1, Ordering::Relaxed);
                        let mut latest = self.ledger.latest_acceptance.lock().unwrap();
                        *latest = (*latest).max(acknowledged.elapsed());
                    }
                }
            }
        }
    }

    /// Sends one request and books its answer; the body when it is `expected`.
    async fn send(&self, operation: &'static str, request: RequestBuilder, expected: u16) -> Option<Value> {
        let started = Instant::now();
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => {
                self.ledger
                    .violation(format!("{operation} hung for {:?}", started.elapsed()));
                return None;
            }
            Err(_) => {
                // A replica killed mid-request: the load balancer's retry is the client's.
                self.ledger.count(format!("{operation} connection-lost"));
                return None;
            }
        };
        let status = response.status().as_u16();
        self.ledger.count(format!("{operation} {status}"));
        if status >= 500 && status != 503 {
            self.ledger.violation(format!("{operation} answered {status}"));
        }
        if status == 503 && !response.headers().contains_key("retry-after") {
            self.ledger
                .violation(format!("{operation} answered 503 without Retry-After"));
        }
        if status != expected {
            return None;
        }
        let now = Instant::now();
        self.ledger.last_success.lock().unwrap().insert(operation, now);
        self.ledger.successes.lock().unwrap().push((operation, now));
        Some(response.json().await.unwrap_or(Value::Null))
    }
}

fn token(body: &Value, name: &str) -> Option<String> {
    body["tokens"][name].as_str().map(str::to_owned)
}

/// `GET {sidecar}/verify` about `GET /` with `access` as the bearer token, as nginx asks.
pub fn verify_request(client: &Client, sidecar: &str, access: &str) -> RequestBuilder {
    client
        .get(format!("{sidecar}/verify"))
        .header("x-original-method", "GET")
        .header("x-original-uri", "/")
        .bearer_auth(access)
}
