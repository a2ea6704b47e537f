//! The trusted keys: fetched from the auth server's JWKS or read from a mounted file, refreshed
//! periodically, refetched (rate-limited, one at a time) when a token names an unknown `kid`, and
//! kept when a refresh fails.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use auth_core::readiness::Latch;
use auth_core::revocation::unix_now;
use auth_core::shutdown::Shutdown;
use auth_core::token::KeySet;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use prometheus::IntCounter;
use tokio::sync::Mutex;

use crate::http_client::{HttpClient, StreamBody};

/// The largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How often a mounted file is checked for changes.
const FILE_POLL: Duration = Duration::from_secs(2);

/// Where the keys come from.
pub enum KeySource {
    /// An HTTP URL (the auth server's `/.well-known/jwks.json`).
    Url {
        /// The client (boxed: it is large, and the enum is built once).
        client: Box<HttpClient>,
        /// The URL.
        uri: Uri,
        /// Timeout of one fetch.
        timeout: Duration,
    },
    /// A mounted file.
    File(PathBuf),
}

/// The trusted keys, numbered so that what was verified with one set can tell it is stale.
#[derive(Default)]
pub struct TrustedKeys {
    /// Bumped whenever the set changes.
    pub version: u64,
    /// The keys.
    pub set: KeySet,
}

/// The current keys and how to renew them.
pub struct KeyStore {
    // Read on every request: loads take no lock and touch no shared reference count.
    current: ArcSwap<TrustedKeys>,
    // The document the keys were built from, to notice when a file changes.
    document: RwLock<Bytes>,
    source: KeySource,
    loaded_at: AtomicI64,
    last_refetch: Mutex<Option<Instant>>,
    cooldown: Duration,
    failures: IntCounter,
}

impl KeyStore {
    /// A store with no keys yet.
    pub fn new(source: KeySource, cooldown: Duration, failures: IntCounter) -> Self {
        Self {
            current: ArcSwap::from_pointee(TrustedKeys::default()),
            document: RwLock::new(Bytes::new()),
            source,
            loaded_at: AtomicI64::new(0),
            last_refetch: Mutex::new(None),
            cooldown,
            failures,
        }
    }

    /// The keys in use.
    pub fn keys(&self) -> arc_swap::Guard<Arc<TrustedKeys>> {
        self.current.load()
    }

    /// Whether keys were ever loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded_at.load(Ordering::Acquire) != 0
    }

    /// Seconds since the keys were last loaded successfully (`None` before the first load).
    pub fn age(&self) -> Option<i64> {
        match self.loaded_at.load(Ordering::Acquire) {
            0 => None,
            at => Some(unix_now() - at),
        }
    }

    async fn fetch(&self) -> anyhow::Result<Bytes> {
        match &self.source {
            KeySource::File(path) => Ok(Bytes::from(tokio::fs::read(path).await?)),
            KeySource::Url { client, uri, timeout } => {
                let request = hyper::Request::get(uri.clone())
                    .header("accept", "application/json")
                    .body(StreamBody::new(Empty::new().map_err(|never| match never {})))?;
                let response = tokio::time::timeout(*timeout, client.request(request)).await??;
                anyhow::ensure!(
                    response.status() == 200,
                    "the JWKS answered {}",
                    response.status()
                );
                let body = tokio::time::timeout(
                    *timeout,
                    Limited::new(response.into_body(), MAX_JWKS_BYTES).collect(),
                )
                .await?
                .map_err(|error| anyhow::anyhow!("reading the JWKS: {error}"))?;
                Ok(body.to_bytes())
            }
        }
    }

    /// Fetches and installs the keys; on failure the previous keys stay in use.
    pub async fn reload(&self) -> anyhow::Result<bool> {
        let outcome = async {
            let document = self.fetch().await?;
            let unchanged = *self
                .document
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                == document;
            if !unchanged {
                let set = KeySet::from_json(&document)?;
                let version = self.current.load().version + 1;
                self.current.store(Arc::new(TrustedKeys { version, set }));
                *self
                    .document
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = document;
            }
            self.loaded_at.store(unix_now(), Ordering::Release);
            anyhow::Ok(!unchanged)
        }
        .await;
        if outcome.is_err() {
            self.failures.inc();
        }
        outcome
    }

    /// Refetches because a token named a `kid` we do not know, and returns whether the caller
    /// should validate again. One fetch at a time, at most one per cooldown: a caller arriving
    /// while another fetch is under way or too recent waits for the next fetch that starts after
    /// it arrived (a new key published meanwhile is never refused, and junk `kid`s cannot keep it
    /// out), and every caller that waited validates again with what that fetch brought.
    pub async fn refetch_for_unknown_kid(&self) -> bool {
        let arrived = Instant::now();
        let mut last = self.last_refetch.lock().await;
        if last.is_some_and(|at| at >= arrived) {
            return true;
        }
        if let Some(wait) = last.and_then(|at| self.cooldown.checked_sub(at.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.reload().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "refetching the keys failed; keeping the last good keys"
            );
        }
        true
    }

    /// Loads the keys (retrying until they load, then releasing `loaded`) and refreshes them every
    /// `interval` (a mounted file is checked every two seconds) until shutdown.
    pub fn spawn_refresh(self: Arc<Self>, interval: Duration, loaded: Latch, shutdown: Shutdown) {
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(50);
            loop {
                match self.reload().await {
                    Ok(_) => break,
                    Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot load the keys yet"),
                }
                tokio::select! {
                    () = tokio::time::sleep(retry) => {}
                    () = shutdown.clone().wait() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(2));
            }
            tracing::info!(keys = self.keys().set.len(), "keys loaded");
            loaded.release();
            let period = match self.source {
                KeySource::File(_) => FILE_POLL.min(interval),
                KeySource::Url { .. } => interval,
            };
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = shutdown.clone().wait() => return,
                }
                match self.reload().await {
                    Ok(true) => tracing::info!(keys = self.keys().set.len(), "keys changed"),
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        error = format!("{error:#}"),
                        "refreshing the keys failed; keeping the last good keys"
                    ),
                }
            }
        });
    }
}
