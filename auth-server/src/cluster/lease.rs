//! Leader election through a `coordination.k8s.io` Lease, with client-go's semantics: a holder
//! renews the Lease every retry period; a candidate takes it over only after watching it stay
//! unchanged for a whole lease duration *by its own monotonic clock*, so skewed wall clocks
//! between nodes never shorten a term; and a leader that cannot renew within the renew deadline
//! stops leading at once, before another replica can take over.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;

use super::is_conflict;
use kube::api::PostParams;
use tokio::sync::watch;

use auth_core::shutdown::Shutdown;

/// How the election runs.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a term lasts without renewal.
    pub duration: Duration,
    /// A leader that has not renewed for this long steps down (shorter than `duration`).
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or tried.
    pub retry_period: Duration,
}

/// Whether this replica leads, as it changes.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A leadership that never leads (and a sender to flip it, for tests and the CLI).
    pub fn channel() -> (watch::Sender<bool>, Self) {
        let (sender, receiver) = watch::channel(false);
        (sender, Self(receiver))
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the leadership changes; `false` when the election stopped.
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }

    /// Runs `work` to its end unless this replica stops leading first: then `None`, and `work`
    /// is dropped at once (its next request is never sent). If the election ends while this
    /// replica leads, the work is ended by the replica's shutdown instead.
    pub async fn while_leader<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut watch = self.clone();
        let lost = async move {
            while watch.is_leader() {
                if !watch.changed().await {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            biased;
            () = lost => None,
            done = work => Some(done),
        }
    }

    /// Waits until this replica leads; `false` when shutdown or the election's end comes first.
    pub async fn until_leader(&mut self, shutdown: &Shutdown) -> bool {
        while !self.is_leader() {
            tokio::select! {
                alive = self.changed() => if !alive { return false },
                () = shutdown.clone().wait() => return false,
            }
        }
        true
    }
}

/// What was last seen of another holder's Lease, and since when (by our clock).
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<String>),
    since: Instant,
}

/// One candidate in the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
    renewed: Option<Instant>,
}

/// A failed step; the election goes on at the next period.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another replica wrote the Lease first.
    #[error("the Lease changed meanwhile")]
    Conflict,
    /// The API server did not answer within the retry period.
    #[error("the API server did not answer in time")]
    Timeout,
    /// The API server could not be asked.
    #[error("the Lease could not be read or written: {0}")]
    Api(#[from] kube::Error),
}

impl Elector {
    /// A candidate that has seen nothing yet.
    pub fn new(api: Api<Lease>, settings: LeaseSettings) -> Self {
        Self {
            api,
            settings,
            observed: None,
            renewed: None,
        }
    }

    fn spec(&self, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.settings.duration.as_secs()).unwrap_or(i32::MAX)),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: creates, renews or takes over the Lease when it may. Returns whether this
    /// replica holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let map_write = |error: kube::Error| match is_conflict(&error) {
            true => LeaseError::Conflict,
            false => LeaseError::Api(error),
        };
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(map_write)?;
            self.renewed = Some(Instant::now());
            return Ok(true);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
        let ours = holder.as_deref() == Some(self.settings.identity.as_str());
        if !ours {
            self.renewed = None;
            let record = (
                holder.clone(),
                spec.renew_time.clone(),
                lease.metadata.resource_version.clone(),
            );
            if self.observed.as_ref().is_none_or(|seen| seen.record != record) {
                self.observed = Some(Observed {
                    record,
                    since: Instant::now(),
                });
            }
            let term = spec
                .lease_duration_seconds
                .and_then(|secs| u64::try_from(secs).ok())
                .map_or(self.settings.duration, Duration::from_secs);
            let expired = self
                .observed
                .as_ref()
                .is_some_and(|seen| seen.since.elapsed() >= term);
            if holder.is_some() && !expired {
                return Ok(false);
            }
        }
        let (acquired, transitions) = match ours {
            true => (spec.acquire_time, spec.lease_transitions.unwrap_or(0)),
            false => (None, spec.lease_transitions.unwrap_or(0).saturating_add(1)),
        };
        lease.spec = Some(self.spec(acquired, transitions));
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map_err(map_write)?;
        self.renewed = Some(Instant::now());
        Ok(true)
    }

    /// Whether a leader that failed to renew is still within its renew deadline.
    fn still_leading(&self) -> bool {
        self.renewed
            .is_some_and(|at| at.elapsed() < self.settings.renew_deadline)
    }

    /// Gives the Lease up (on shutdown), so a successor need not wait a whole term.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.settings.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(error) = self
            .api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(%error, "could not release the leader Lease");
        }
    }

    /// Runs the election until shutdown, publishing whether this replica leads.
    pub fn spawn(mut self, shutdown: Shutdown) -> Leadership {
        let (sender, leadership) = Leadership::channel();
        tokio::spawn(async move {
            loop {
                // A hung call must not keep a leader leading past its deadline.
                let round = tokio::time::timeout(self.settings.retry_period, self.try_acquire_or_renew());
                let leading = match round.await.unwrap_or(Err(LeaseError::Timeout)) {
                    Ok(leading) => leading,
                    Err(error) => {
                        let leading = self.still_leading();
                        if !leading {
                            tracing::warn!(%error, "leader election: no Lease held");
                        }
                        leading
                    }
                };
                sender.send_if_modified(|was| {
                    if *was != leading {
                        tracing::info!(identity = %self.settings.identity, leading, "leadership changed");
                        *was = leading;
                        return true;
                    }
                    false
                });
                tokio::select! {
                    () = tokio::time::sleep(self.settings.retry_period) => {}
                    () = shutdown.clone().wait() => break,
                }
            }
            sender.send_replace(false);
            self.release().await;
        });
        leadership
    }
}
