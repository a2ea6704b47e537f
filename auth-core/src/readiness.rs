//! Readiness as a set of start-up latches plus live dependency checks.
//!
//! A program is ready when every latch has been released (keys loaded, index loaded, …), every
//! check passes (database reachable, …) and it is not draining for shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;

/// How long one dependency check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// A live check of one dependency.
pub trait ReadinessCheck: Send + Sync + 'static {
    /// The name shown in the health report.
    fn name(&self) -> &'static str;
    /// `Ok` when the dependency is usable; the error is a short reason safe to show to operators.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The shared readiness state of one program.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    latches: Mutex<Vec<(&'static str, Arc<AtomicBool>)>>,
    checks: Mutex<Vec<Arc<dyn ReadinessCheck>>>,
    draining: AtomicBool,
}

/// A start-up condition; readiness waits until it is released.
#[derive(Clone, Debug)]
pub struct Latch {
    released: Arc<AtomicBool>,
}

impl Latch {
    /// Marks the condition as met.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// The outcome of one latch or check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentStatus {
    /// The latch or check name.
    pub name: &'static str,
    /// `ok`, `pending` (a latch not yet released) or `failing`.
    pub status: &'static str,
    /// Why it is failing, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The full readiness report, as served on `/health/ready`.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    /// `ready`, `not_ready` or `draining`.
    pub status: &'static str,
    /// Every latch and check.
    pub components: Vec<ComponentStatus>,
}

impl ReadinessReport {
    /// Whether the program should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    /// Registers a start-up condition, initially not met.
    pub fn latch(&self, name: &'static str) -> Latch {
        let released = Arc::new(AtomicBool::new(false));
        lock(&self.inner.latches).push((name, released.clone()));
        Latch { released }
    }

    /// Registers a dependency that is checked on every readiness probe.
    pub fn add_check(&self, check: impl ReadinessCheck) {
        lock(&self.inner.checks).push(Arc::new(check));
    }

    /// Stops reporting ready, so load balancers drain this instance before it exits.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Evaluates every latch and check (checks concurrently, each with a timeout).
    pub async fn report(&self) -> ReadinessReport {
        let mut components: Vec<ComponentStatus> = lock(&self.inner.latches)
            .iter()
            .map(|(name, released)| ComponentStatus {
                name,
                status: if released.load(Ordering::Acquire) {
                    "ok"
                } else {
                    "pending"
                },
                reason: None,
            })
            .collect();
        let checks = lock(&self.inner.checks).clone();
        components.extend(join_all(checks.iter().map(|check| run_check(check.as_ref()))).await);
        let draining = self.inner.draining.load(Ordering::Acquire);
        let status = if draining {
            "draining"
        } else if components.iter().all(|component| component.status == "ok") {
            "ready"
        } else {
            "not_ready"
        };
        ReadinessReport { status, components }
    }
}

async fn run_check(check: &dyn ReadinessCheck) -> ComponentStatus {
    let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    };
    match outcome {
        Ok(()) => ComponentStatus {
            name: check.name(),
            status: "ok",
            reason: None,
        },
        Err(reason) => ComponentStatus {
            name: check.name(),
            status: "failing",
            reason: Some(reason),
        },
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (plain pushes and reads).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Result<(), String>);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn check(&self) -> BoxFuture<'_, Result<(), String>> {
            Box::pin(async move { self.0.clone() })
        }
    }

    #[tokio::test]
    async fn ready_only_when_every_latch_is_released_and_every_check_passes() {
        let readiness = Readiness::default();
        let keys = readiness.latch("keys");
        readiness.add_check(Fixed(Ok(())));
        assert_eq!(readiness.report().await.status, "not_ready");
        keys.release();
        assert!(readiness.report().await.is_ready());
        readiness.add_check(Fixed(Err("down".into())));
        let report = readiness.report().await;
        assert_eq!(report.status, "not_ready");
        assert_eq!(report.components[2].reason.as_deref(), Some("down"));
    }

    #[tokio::test]
    async fn draining_is_never_ready() {
        let readiness = Readiness::default();
        readiness.set_draining();
        assert_eq!(readiness.report().await.status, "draining");
    }
}
