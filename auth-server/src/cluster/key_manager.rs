//! Signing keys managed in Kubernetes. Every replica watches the key Secret and swaps its key ring
//! when the Secret changes (no restart, no polling); the elected replica keeps the schedule:
//! creates the first key, publishes new keys, activates them after the propagation delay, deletes
//! retired keys once their tokens have expired, mirrors the public keys to the JWKS ConfigMap, and
//! re-creates a deleted Secret from the ring it last saw (so no token in flight breaks).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use auth_core::revocation::unix_now;
use auth_core::shutdown::Shutdown;
use futures_util::StreamExt;
use kube::runtime::watcher;
use tokio::sync::{oneshot, watch};

use super::key_store::{KeyStore, StoreError, decode};
use super::lease::Leadership;
use crate::keys::rotation::{Change, ManagedRing, RotationPolicy};
use crate::keys::{KeyError, SharedKeys};

/// The longest the leader waits between two looks at the schedule (a change it did not hear of,
/// such as a lost watch, is caught within this).
const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// The pause after the API server failed.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The ring as last seen in the Secret by this replica.
pub type SeenRing = watch::Receiver<Option<ManagedRing>>;

/// Watches the key Secret and keeps the keys in step with it. Returns what this replica sees of
/// the ring, and the keys once the first usable ring has been seen (the leader creates it on a
/// first start).
pub fn follow_secret(store: &KeyStore, shutdown: Shutdown) -> (SeenRing, oneshot::Receiver<SharedKeys>) {
    let (seen_tx, seen) = watch::channel(None::<ManagedRing>);
    let (api, name) = store.secrets();
    let mut stream = Box::pin(watcher::watch_object(api, name));
    let name = name.to_owned();
    let (first_tx, first) = oneshot::channel();
    tokio::spawn(async move {
        let mut keys: Option<SharedKeys> = None;
        let mut first_tx = Some(first_tx);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = shutdown.clone().wait() => return,
            };
            match event {
                Some(Ok(Some(secret))) => match decode(&secret).and_then(|ring| Ok((ring.key_ring()?, ring)))
                {
                    Ok((ring, managed)) => {
                        tracing::info!(kid = %ring.signing_key().kid, published = ring.jwks().keys.len(), "signing keys loaded from the key Secret");
                        match &keys {
                            Some(keys) => keys.store(Arc::new(ring)),
                            None => {
                                let shared = Arc::new(ArcSwap::from_pointee(ring));
                                keys = Some(shared.clone());
                                if let Some(first) = first_tx.take() {
                                    let _ = first.send(shared);
                                }
                            }
                        }
                        seen_tx.send_replace(Some(managed));
                    }
                    Err(error) => {
                        tracing::error!(%error, secret = %name, "the key Secret is unusable; keeping the last good keys")
                    }
                },
                Some(Ok(None)) => {
                    tracing::warn!(secret = %name, "the key Secret is missing; keeping the last good keys until the leader writes it");
                    // Wakes the leader to write it back from the ring last seen.
                    seen_tx.send_modify(|_| ());
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the key Secret failed; retrying");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                None => return,
            }
        }
    });
    (seen, first)
}

/// The schedule keeper, run by every replica and acting only while it leads.
pub struct KeyManager {
    /// The Secret and ConfigMap.
    pub store: KeyStore,
    /// The schedule.
    pub policy: RotationPolicy,
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// The ring as this replica last saw it.
    pub seen: SeenRing,
    /// Changes made, by kind.
    pub changes: prometheus::IntCounterVec,
}

impl KeyManager {
    /// Brings the stored ring up to date at `now` and mirrors its public keys to the ConfigMap;
    /// returns the stored ring.
    pub async fn reconcile(&self, now: i64) -> Result<Option<ManagedRing>, StoreError> {
        let last_seen = self.seen.borrow().clone();
        let policy = &self.policy;
        let mut edit = |stored: Option<ManagedRing>| -> Result<Option<(ManagedRing, Vec<Change>)>, KeyError> {
            match stored {
                Some(mut ring) => {
                    let changes = ring.advance(policy, now)?;
                    Ok((!changes.is_empty()).then_some((ring, changes)))
                }
                // A deleted Secret is re-created from the keys the replicas sign with.
                None => match last_seen.clone() {
                    Some(ring) => Ok(Some((ring, Vec::new()))),
                    None => ManagedRing::first(policy, now).map(|(ring, change)| Some((ring, vec![change]))),
                },
            }
        };
        let (ring, changes) = self.store.update(&mut edit).await?;
        for change in &changes {
            tracing::info!(?change, "signing key schedule");
            self.changes.with_label_values(&[change.label()]).inc();
        }
        if let Some(ring) = &ring
            && self.store.publish_jwks(ring).await?
        {
            tracing::info!(
                keys = ring.keys.len(),
                "published the public keys to the JWKS ConfigMap"
            );
        }
        Ok(ring)
    }

    /// Runs until shutdown: while leading, reconciles at every scheduled instant, whenever the
    /// Secret changes, and at least every 30 seconds; stops at once when leadership is lost, a
    /// pass under way included (its next request is never sent; what it wrote is whole, as
    /// every write is one object, and the next leader's first pass completes the rest).
    pub fn spawn(mut self, shutdown: Shutdown) {
        tokio::spawn(async move {
            while self.leadership.until_leader(&shutdown).await {
                let Some(pass) = self.leadership.while_leader(self.reconcile(unix_now())).await else {
                    continue;
                };
                let wait = match pass {
                    Ok(Some(ring)) => ring
                        .next_change(&self.policy)
                        .map_or(RECONCILE_EVERY, |at| {
                            Duration::from_secs(u64::try_from(at - unix_now()).unwrap_or(0))
                        })
                        .min(RECONCILE_EVERY),
                    Ok(None) => RECONCILE_EVERY,
                    Err(error) => {
                        tracing::warn!(%error, "keeping the signing key schedule failed; retrying");
                        RETRY_AFTER
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    seen = self.seen.changed() => if seen.is_err() { return },
                    _ = self.leadership.changed() => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }
}
