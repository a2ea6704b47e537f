//! bcrypt on the blocking pool, a bounded number at a time, with a bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus::IntGauge;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tracing::Span;

/// Why a hash could not be computed or checked.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The queue is full: the caller should answer 503 with `Retry-After`.
    #[error("password hashing queue is full")]
    Busy,
    /// bcrypt failed, or the blocking task did not complete.
    #[error("password hashing failed: {0}")]
    Failed(String),
}

/// Hashes and verifies passwords without blocking the async runtime or queueing without bound.
#[derive(Clone)]
pub struct PasswordHasher {
    cost: u32,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
    // A real hash of a random password at the configured cost, so a login for an unknown account
    // costs exactly as much as one with a wrong password.
    dummy_hash: Arc<str>,
    depth: IntGauge,
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
    /// `concurrency` hashes at once and up to `queue_limit` more waiting; blocks once to compute
    /// the dummy hash, so call it at start.
    pub fn new(
        cost: u32,
        concurrency: usize,
        queue_limit: usize,
        depth: IntGauge,
    ) -> Result<Self, HashError> {
        let mut seed = [0u8; 16];
        getrandom::fill(&mut seed).map_err(|error| HashError::Failed(error.to_string()))?;
        let dummy_hash = bcrypt::hash(seed, cost).map_err(|error| HashError::Failed(error.to_string()))?;
        Ok(Self {
            cost,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            in_flight: Arc::new(AtomicUsize::new(0)),
            capacity: concurrency.max(1) + queue_limit,
            dummy_hash: dummy_hash.into(),
            depth,
        })
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
        if queued > self.capacity {
            return Err(HashError::Busy);
        }
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|error| HashError::Failed(error.to_string()))?;
        let span = Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(work))
            .await
            .map_err(|error| HashError::Failed(error.to_string()))?
            .map_err(|error| HashError::Failed(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(concurrency: usize, queue: usize) -> PasswordHasher {
        PasswordHasher::new(4, concurrency, queue, IntGauge::new("depth", "depth").unwrap()).unwrap()
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
        let hasher = PasswordHasher::new(10, 1, 1, IntGauge::new("d", "d").unwrap()).unwrap();
        let results = futures_util::future::join_all((0..6).map(|_| hasher.hash("some password"))).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(HashError::Busy)))
            .count();
        assert_eq!(busy, 4, "1 running + 1 queued, the rest refused");
        assert_eq!(hasher.depth.get(), 0, "the gauge returns to zero");
    }
}
