//! Keeping the revocation state in Redis whole: restored before the server is ready, restored at
//! once when Redis loses it (the epoch missing or unfinished, or another Redis process answering),
//! and every key re-checked periodically.

use std::time::{Duration, Instant};

use auth_core::readiness::Latch;
use auth_core::shutdown::Shutdown;
use prometheus::IntCounterVec;

use crate::service::revoker::Revoker;

/// The background task that watches Redis and restores the revocations.
pub struct RevocationGuard {
    /// Restores.
    pub revoker: Revoker,
    /// Released after the first restore (the server is not ready before).
    pub restored: Latch,
    /// How often Redis is looked at.
    pub watch_interval: Duration,
    /// How often every key is re-checked.
    pub resync_interval: Duration,
    /// Full restores by trigger (`start`, `state_lost`, `redis_replaced`).
    pub restores: IntCounterVec,
    /// Periodic re-checks by outcome (`ran`, `skipped`).
    pub resyncs: IntCounterVec,
}

/// What the guard remembers between looks.
struct Watch {
    // The Redis process the last restore wrote to.
    run_id: Option<String>,
    // `None` until the first restore.
    next_resync: Option<Instant>,
    reachable: bool,
}

impl RevocationGuard {
    /// Runs until shutdown.
    pub fn spawn(self, shutdown: Shutdown) {
        tokio::spawn(async move {
            let mut watch = Watch {
                run_id: None,
                next_resync: None,
                reachable: true,
            };
            loop {
                match self.look(&mut watch).await {
                    Ok(()) if !watch.reachable => {
                        watch.reachable = true;
                        tracing::info!("the revocation guard reaches Redis again");
                    }
                    Ok(()) => {}
                    // Logged once per outage: the guard looks several times a second.
                    Err(error) if watch.reachable => {
                        watch.reachable = false;
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "cannot check the revocations in Redis"
                        );
                    }
                    Err(_) => {}
                }
                tokio::select! {
                    () = tokio::time::sleep(self.watch_interval) => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }

    /// One look at Redis, restoring when it lost the revocations or when a re-check is due.
    async fn look(&self, watch: &mut Watch) -> anyhow::Result<()> {
        let view = self.revoker.observe().await?;
        let replaced = matches!((&watch.run_id, &view.run_id), (Some(old), Some(new)) if old != new);
        let trigger = match watch.next_resync {
            None => "start",
            Some(_) if replaced => "redis_replaced",
            Some(_) if view.epoch.complete().is_none() => "state_lost",
            Some(due) if Instant::now() >= due => "periodic",
            Some(_) => return Ok(()),
        };
        // The periodic re-check reads every unexpired revocation: one replica of many runs it.
        if trigger == "periodic" {
            let lease = self.resync_interval.saturating_sub(self.watch_interval);
            let claimed = self.revoker.claim_resync(lease.max(self.watch_interval)).await?;
            let outcome = if claimed { "ran" } else { "skipped" };
            self.resyncs.with_label_values(&[outcome]).inc();
            if !claimed {
                watch.next_resync = Some(Instant::now() + self.resync_interval);
                return Ok(());
            }
        }
        let started = Instant::now();
        // Another process may hold less than the epoch it carries (a replica that had not caught
        // up, a restart from an older snapshot): that epoch is replaced, so readers reload.
        let replace = replaced
            .then(|| view.epoch.complete().map(str::to_owned))
            .flatten();
        let restored = self.revoker.restore(replace).await?;
        watch.run_id = view.run_id;
        watch.next_resync = Some(Instant::now() + self.resync_interval);
        self.restored.release();
        if restored.full {
            self.restores.with_label_values(&[trigger]).inc();
            tracing::warn!(
                trigger,
                revocations = restored.republished,
                seconds = started.elapsed().as_secs_f64(),
                "revocations restored into Redis under a new epoch"
            );
        } else if restored.republished > 0 {
            tracing::warn!(
                republished = restored.republished,
                "republished revocations whose keys were missing from Redis"
            );
        }
        Ok(())
    }
}
