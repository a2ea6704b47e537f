//! Following the revocation stream into a [`RevocationIndex`]: read it all at start, then block on
//! new entries from the last id seen, resuming from that id after a reconnect (no gap), and
//! reloading from the beginning when that id is no longer in the stream (trimmed, or a flushed
//! Redis).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, Value};

use super::{RedisKeys, Revocation, RevocationIndex, unix_now};
use crate::readiness::Latch;
use crate::shutdown::Shutdown;

const BLOCK: Duration = Duration::from_millis(1000);
const PAGE: usize = 5000;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How the follower is doing, for readiness, metrics and fail-closed decisions.
#[derive(Default)]
pub struct FollowerStatus {
    // Unix milliseconds of the last successful read (0: never).
    last_read_ms: AtomicI64,
    loads: AtomicU64,
}

impl FollowerStatus {
    /// Whether the stream has been loaded at least once.
    pub fn loaded(&self) -> bool {
        self.loads.load(Ordering::Acquire) > 0
    }

    /// How long since the follower last heard from Redis (zero while it is following).
    pub fn lag(&self) -> Duration {
        let last = self.last_read_ms.load(Ordering::Acquire);
        if last == 0 {
            return Duration::MAX;
        }
        let now = unix_now_ms();
        Duration::from_millis(u64::try_from(now - last).unwrap_or(0))
    }

    /// How many times the stream was (re)loaded from the beginning.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Acquire)
    }

    fn heard_from_redis(&self) {
        self.last_read_ms.store(unix_now_ms(), Ordering::Release);
    }
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Follows one Redis stream into one index.
pub struct StreamFollower {
    client: Client,
    keys: RedisKeys,
    index: Arc<RevocationIndex>,
    status: Arc<FollowerStatus>,
}

impl StreamFollower {
    /// A follower of `keys.stream()` on `client`.
    pub fn new(
        client: Client,
        keys: RedisKeys,
        index: Arc<RevocationIndex>,
        status: Arc<FollowerStatus>,
    ) -> Self {
        Self {
            client,
            keys,
            index,
            status,
        }
    }

    /// Follows until shutdown, reconnecting with backoff, and releases `loaded` once the stream
    /// has been read in full; prunes expired entries as it goes.
    pub async fn run(self, loaded: Latch, shutdown: Shutdown) {
        let mut last_id: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let outcome = tokio::select! {
                outcome = self.follow(&mut last_id, &loaded) => outcome,
                () = shutdown.clone().wait() => return,
            };
            if let Err(error) = outcome {
                tracing::warn!(error = %error, retry_in = ?backoff, "revocation stream unreachable");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.clone().wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn connect(&self) -> redis::RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(1)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// One connection's worth of following; returns on the first error.
    async fn follow(&self, last_id: &mut Option<String>, loaded: &Latch) -> redis::RedisResult<()> {
        let mut conn = self.connect().await?;
        let stream = self.keys.stream();
        let resumable = match last_id.as_deref() {
            Some(id) => {
                let found: StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&stream)
                    .arg(id)
                    .arg(id)
                    .query_async(&mut conn)
                    .await?;
                !found.ids.is_empty()
            }
            None => false,
        };
        if !resumable {
            *last_id = Some(self.load(&mut conn, &stream).await?);
            loaded.release();
        }
        let mut last_prune = unix_now();
        loop {
            let from = last_id.clone().unwrap_or_else(|| "0-0".to_owned());
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&from)
                .query_async(&mut conn)
                .await?;
            self.status.heard_from_redis();
            if let Some(reply) = reply {
                for key in reply.keys {
                    if let Some(last) = key.ids.last() {
                        *last_id = Some(last.id.clone());
                    }
                    self.apply(&key.ids);
                }
            }
            if unix_now() - last_prune >= 30 {
                last_prune = unix_now();
                self.index.prune(last_prune);
            }
        }
    }

    /// Reads the whole stream (it holds exactly the revocations that can still matter) and
    /// returns the id to follow from.
    async fn load(&self, conn: &mut MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
        let mut from = "-".to_owned();
        let mut last = "0-0".to_owned();
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(stream)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(conn)
                .await?;
            let Some(tail) = page.ids.last() else { break };
            last = tail.id.clone();
            from = format!("({last}");
            self.apply(&page.ids);
            if page.ids.len() < PAGE {
                break;
            }
        }
        self.index.prune(unix_now());
        self.status.heard_from_redis();
        self.status.loads.fetch_add(1, Ordering::AcqRel);
        tracing::info!(entries = self.index.len(), "revocation index loaded");
        Ok(last)
    }

    fn apply(&self, entries: &[StreamId]) {
        let revocations: Vec<Revocation> = entries.iter().filter_map(decode).collect();
        self.index.apply(&revocations);
    }
}

fn decode(entry: &StreamId) -> Option<Revocation> {
    let fields: HashMap<String, String> = entry
        .map
        .iter()
        .filter_map(|(field, value)| Some((field.clone(), text(value)?)))
        .collect();
    Revocation::from_stream_fields(&fields)
}

fn text(value: &Value) -> Option<String> {
    redis::from_redis_value_ref(value).ok()
}
