//! bcrypt on the blocking pool, a bounded number at a time, with a queue bounded by the time a
//! job would wait: a job that cannot start within the deadline is never hashed (its client, or the
//! ingress in front, has given up by then), a request whose expected wait is already longer is
//! refused at once, and the refusal's `Retry-After` says when the queue will have drained. A
//! client that leaves drops its queued job with its request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, IntCounterVec, IntGauge};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Span;

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full (or the job waited past the deadline): answer 503 with `Retry-After`.
    #[error("password hashing queue is full")]
    Busy {
        /// Seconds until the queue ahead has drained.
        retry_after: u64,
    },
    /// bcrypt failed, or the blocking task did not complete.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords without blocking the async runtime or queueing without bound.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    concurrency: usize,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    max_wait: Duration,
    // A moving average of one hash's duration, in microseconds.
    hash_micros: Arc<AtomicU64>,
    // A real hash of a random password at the configured cost, so a login for an unknown account
    // costs exactly as much as one with a wrong password.
    dummy_hash: Arc<str>,
    depth: IntGauge,
    outcomes: Outcomes,
}

/// Jobs by what became of them.
#[derive(Clone)]
struct Outcomes {
    hashed: IntCounter,
    refused: IntCounter,
    abandoned: IntCounter,
}

/// Counts a job as abandoned if its request goes away while it waits for its turn.
struct Waiting<'a>(Option<&'a IntCounter>);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(abandoned) = self.0 {
            abandoned.inc();
        }
    }
}

/// Keeps the in-flight count and the depth gauge right however the request ends.
struct Slot<'a>(&'a PasswordHasher);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let now = self.0.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
        self.0.depth.set(i64::try_from(now).unwrap_or(i64::MAX));
    }
}

impl PasswordHasher {
    /// `concurrency` hashes at once, up to `queue_limit` more waiting, none waiting longer than
    /// `max_wait`; blocks once to compute the dummy hash (which also measures a first hash time),
    /// so call it at start.
    pub fn new(
        cost: u32,
        concurrency: usize,
        (queue_limit, max_wait): (usize, Duration),
        (depth, jobs): (IntGauge, IntCounterVec),
    ) -> Result<Self, HashError> {
        let mut seed = [0u8; 16];
        getrandom::fill(&mut seed).map_err(|error| HashError::Failed(error.to_string()))?;
        let started = Instant::now();
        let dummy_hash = bcrypt::hash(seed, cost).map_err(|error| HashError::Failed(error.to_string()))?;
        let concurrency = concurrency.max(1);
        Ok(Self {
            cost,
            concurrency,
            permits: Arc::new(Semaphore::new(concurrency)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency + queue_limit,
            max_wait,
            hash_micros: Arc::new(AtomicU64::new(micros(started.elapsed()))),
            dummy_hash: dummy_hash.into(),
            depth,
            outcomes: Outcomes {
                hashed: jobs.with_label_values(&["hashed"]),
                refused: jobs.with_label_values(&["refused"]),
                abandoned: jobs.with_label_values(&["abandoned"]),
            },
        })
    }

    /// How long a job with `ahead` jobs before it will wait, at the hash time measured so far.
    fn expected_wait(&self, ahead: usize) -> Duration {
        let rounds = u64::try_from(ahead / self.concurrency).unwrap_or(u64::MAX);
        Duration::from_micros(self.hash_micros.load(Ordering::Relaxed).saturating_mul(rounds))
    }

    fn busy(&self) -> HashError {
        self.outcomes.refused.inc();
        let ahead = self.in_flight.load(Ordering::Acquire);
        HashError::Busy {
            retry_after: self.expected_wait(ahead).as_secs().max(1),
        }
    }

    /// The configured cost factor.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// A bcrypt hash of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let password = SecretString::from(password);
        let cost = self.cost;
        self.run(move || bcrypt::hash(password.expose_secret(), cost))
            .await
    }

    /// Whether `password` matches `hash`; with no hash (unknown account) it checks against a dummy
    /// hash and answers `false`, taking the same time.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, HashError> {
        // A disabled password (an administrator forced a reset) is no bcrypt hash: it is checked
        // against the dummy hash like an unknown account, so its answer takes as long.
        let hash = hash.filter(|hash| hash.starts_with("$2"));
        let known = hash.is_some();
        let hash: Arc<str> = hash.map_or_else(|| self.dummy_hash.clone(), Arc::from);
        let password = SecretString::from(password);
        let matched = self
            .run(move || bcrypt::verify(password.expose_secret(), &hash))
            .await?;
        Ok(known && matched)
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, bcrypt::BcryptError> + Send + 'static,
    ) -> Result<T, HashError> {
        let queued = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let _slot = Slot(self);
        self.depth.set(i64::try_from(queued).unwrap_or(i64::MAX));
        if queued > self.capacity || self.expected_wait(queued - 1) > self.max_wait {
            return Err(self.busy());
        }
        // Dropping this future (the client left) leaves the queue without hashing.
        let mut waiting = Waiting(Some(&self.outcomes.abandoned));
        let permit = tokio::time::timeout(self.max_wait, self.permits.acquire()).await;
        waiting.0 = None;
        let _permit = permit
            .map_err(|_| self.busy())?
            .map_err(|error| HashError::Failed(error.to_string()))?;
        self.outcomes.hashed.inc();
        let span = Span::current();
        let hash_micros = self.hash_micros.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outcome = span.in_scope(work);
            // An exponential moving average (1/8 weight) follows the machine's speed.
            let last = micros(started.elapsed());
            let average = hash_micros.load(Ordering::Relaxed);
            hash_micros.store(average - average / 8 + last / 8, Ordering::Relaxed);
            outcome
        })
        .await
        .map_err(|error| HashError::Failed(error.to_string()))?
        .map_err(|error| HashError::Failed(error.to_string()))
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> (IntGauge, IntCounterVec) {
        let jobs = IntCounterVec::new(prometheus::Opts::new("jobs", "jobs"), &["outcome"]).unwrap();
        (IntGauge::new("depth", "depth").unwrap(), jobs)
    }

    fn hasher(concurrency: usize, queue: usize) -> PasswordHasher {
        PasswordHasher::new(4, concurrency, (queue, Duration::from_secs(5)), metrics()).unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_only_its_password() {
        let hasher = hasher(2, 4);
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$2b$04$"));
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("wrong horse", Some(&hash)).await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        assert!(!hasher(1, 1).verify("anything", None).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_answers_busy_instead_of_waiting() {
        let limits = (1, Duration::from_secs(60));
        let hasher = PasswordHasher::new(10, 1, limits, metrics()).unwrap();
        let results = futures_util::future::join_all((0..6).map(|_| hasher.hash("some password"))).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(HashError::Busy { .. })))
            .count();
        assert_eq!(busy, 4, "1 running + 1 queued, the rest refused");
        assert_eq!(hasher.depth.get(), 0, "the gauge returns to zero");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_would_wait_past_the_deadline_is_refused_with_the_time_to_drain() {
        // Cost 12 takes a few hundred milliseconds: a queue of ten is seconds of work.
        let limits = (1000, Duration::from_millis(600));
        let hasher = PasswordHasher::new(12, 1, limits, metrics()).unwrap();
        let results = futures_util::future::join_all((0..10).map(|_| hasher.hash("some password"))).await;
        let refused: Vec<u64> = results
            .iter()
            .filter_map(|r| match r {
                Err(HashError::Busy { retry_after }) => Some(*retry_after),
                _ => None,
            })
            .collect();
        let hashed = results.iter().filter(|r| r.is_ok()).count();
        assert!(
            (1..=4).contains(&hashed),
            "only what fits the deadline is hashed: {hashed}"
        );
        assert_eq!(hashed + refused.len(), 10);
        assert!(refused.iter().all(|seconds| *seconds >= 1), "{refused:?}");
        assert_eq!(hasher.outcomes.refused.get(), refused.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_whose_request_went_away_is_never_hashed() {
        let hasher = PasswordHasher::new(4, 1, (100, Duration::from_secs(60)), metrics()).unwrap();
        // Every hashing slot is busy, so the jobs below wait in the queue.
        let busy = hasher.permits.clone().acquire_owned().await.unwrap();
        let jobs: Vec<_> = (0..6)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.hash("some password").await })
            })
            .collect();
        while hasher.depth.get() < 6 {
            tokio::task::yield_now().await;
        }
        for job in &jobs {
            job.abort();
        }
        for job in jobs {
            let _ = job.await;
        }
        drop(busy);
        assert_eq!(hasher.outcomes.hashed.get(), 0);
        assert_eq!(hasher.outcomes.abandoned.get(), 6);
        assert_eq!(hasher.depth.get(), 0);
    }
}
