//! Following the revocation stream into a [`RevocationIndex`]: read it all at start, then block on
//! new entries from the last id seen, resuming from that id after a reconnect (no gap), and
//! reloading from the beginning whenever the revocation epoch changes (Redis lost its data and the
//! server rebuilt the stream). See [`super::epoch`] for why the epoch, not the stream, decides
//! whether the index can vouch for the revocation state.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionInfo, Value};
use tokio_rustls::rustls::ClientConfig;

use super::epoch::{self, Epoch};
use super::load_queue::{LoadQueue, Span, entry_id, position};
use super::range_reader::RangeReader;
use super::snapshot;
use super::{RedisKeys, RevocationIndex, RevocationRef, unix_now};
use crate::readiness::ReadinessCheck;
use crate::redis::RedisSource;
use crate::shutdown::Shutdown;

const BLOCK: Duration = Duration::from_millis(1000);
// Small pages keep both the reply memory and the time Redis spends on one command low.
const PAGE: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const UNKNOWN_POLL: Duration = Duration::from_millis(100);
// Several loaders per core keep single-threaded Redis busy producing one page while the verifier
// parses others (100,000 entries spread evenly in time, 2 cores: one loader per core 117–131 ms to
// load, four 77–103 ms, eight no better).
const PARTS_PER_CORE: usize = 4;
// The position of a follower that loaded an empty stream.
const EMPTY: &str = "0-0";

/// How the follower is doing, for readiness, metrics and fail-closed decisions.
#[derive(Default)]
pub struct FollowerStatus {
    // Unix milliseconds of the last successful read (0: never).
    last_read_ms: AtomicI64,
    loads: AtomicU64,
}

impl FollowerStatus {
    /// How long since the follower last heard from Redis (zero while it is following).
    pub fn lag(&self) -> Duration {
        let last = self.last_read_ms.load(Ordering::Acquire);
        if last == 0 {
            return Duration::MAX;
        }
        let now = unix_now_ms();
        Duration::from_millis(u64::try_from(now - last).unwrap_or(0))
    }

    /// Whether the index vouches for the revocation state: loaded under a complete epoch and
    /// heard from Redis under that epoch within `grace`.
    pub fn vouches(&self, grace: Duration) -> bool {
        self.lag() <= grace
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

/// Readiness of a verifier in index mode: the index vouches for the revocation state.
pub struct IndexCheck {
    /// The follower's status.
    pub status: Arc<FollowerStatus>,
    /// How long the index may go without a confirmed state.
    pub grace: Duration,
}

impl ReadinessCheck for IndexCheck {
    fn name(&self) -> &'static str {
        "revocation_index"
    }

    fn check(&self) -> futures_util::future::BoxFuture<'_, Result<(), String>> {
        let outcome = match self.status.lag() {
            Duration::MAX => Err("the revocation stream is not loaded yet".to_owned()),
            lag if lag > self.grace => Err(format!(
                "no complete revocation state from Redis for {} s",
                lag.as_secs()
            )),
            _ => Ok(()),
        };
        Box::pin(std::future::ready(outcome))
    }
}

/// Where following stands across reconnects.
#[derive(Default)]
struct Position {
    // The id of the last entry applied (`None`: nothing loaded yet).
    last_id: Option<String>,
    // The complete epoch the index was loaded under (`None`: the state is unknown).
    epoch: Option<String>,
    // Whether a read succeeded since the last error.
    healthy: bool,
}

/// Follows one Redis stream into one index.
pub struct StreamFollower {
    source: RedisSource,
    keys: RedisKeys,
    index: Arc<RevocationIndex>,
    status: Arc<FollowerStatus>,
    // How often this follower writes the snapshot others start from (`None`: never).
    snapshots: Option<Duration>,
}

impl StreamFollower {
    /// A follower of `keys.stream()` on the primary of `source`.
    pub fn new(
        source: RedisSource,
        keys: RedisKeys,
        index: Arc<RevocationIndex>,
        status: Arc<FollowerStatus>,
    ) -> Self {
        Self {
            source,
            keys,
            index,
            status,
            snapshots: None,
        }
    }

    /// Also writes the snapshot sidecars start from, at most once `every` (the auth server's
    /// follower does; one replica at a time).
    pub fn writing_snapshots(mut self, every: Duration) -> Self {
        self.snapshots = Some(every);
        self
    }

    /// Follows until shutdown, reconnecting with backoff; prunes expired entries as it goes.
    pub async fn run(self, shutdown: Shutdown) {
        let mut position = Position::default();
        let mut backoff = MIN_BACKOFF;
        loop {
            let outcome = tokio::select! {
                outcome = self.follow(&mut position) => outcome,
                () = shutdown.clone().wait() => return,
            };
            if let Err(error) = outcome {
                // A blip after a healthy stretch is retried at once: flapping Redis costs no more
                // fail-closed time than its outages.
                if std::mem::take(&mut position.healthy) {
                    backoff = MIN_BACKOFF;
                }
                tracing::warn!(error = %error, retry_in = ?backoff, "revocation stream unreachable");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.clone().wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// A connection to the primary, and its address for the loaders.
    async fn connect(&self) -> redis::RedisResult<(MultiplexedConnection, ConnectionInfo)> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(1)));
        let primary = self.source.primary().await?;
        let conn = primary
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((conn, primary.get_connection_info().clone()))
    }

    /// One connection's worth of following; returns on the first error.
    ///
    /// The index vouches for the revocation state (and keeps the gate open) only while Redis shows
    /// the complete epoch it was loaded under. A missing or unfinished epoch (Redis lost its data
    /// and the server has not restored it yet) stops the vouching, so the gate fails closed after
    /// the grace, exactly as with Redis unreachable; a new complete epoch means a rebuilt stream,
    /// which is loaded again from the beginning (the index never forgets what it knew).
    async fn follow(&self, position: &mut Position) -> redis::RedisResult<()> {
        let (mut conn, info) = self.connect().await?;
        let stream = self.keys.stream();
        let mut seen = epoch::read(&mut conn, &self.keys).await?;
        // Resuming is only safe from an entry this stream still holds: after a failover the new
        // primary may lack the newest entries (its clock may even be behind, so its next ids would
        // sort before ours), and an entry trimmed away leaves no anchor either. Reloading costs a
        // read of the stream; skipping entries would accept revoked tokens.
        if let Some(from) = position.last_id.as_deref().filter(|_| position.epoch.is_some())
            && from != EMPTY
            && !holds(&mut conn, &stream, from).await?
        {
            tracing::warn!(
                last_id = from,
                "the revocation stream no longer holds the last entry read (trimmed, or lost in a \
                 failover): reading it again from the beginning"
            );
            position.epoch = None;
        }
        let mut last_prune = unix_now();
        let mut last_snapshot = std::time::Instant::now();
        loop {
            position.healthy = true;
            match seen.complete() {
                Some(current) if position.epoch.as_deref() == Some(current) => self.status.heard_from_redis(),
                Some(current) => {
                    let last = self.load(&mut conn, &info, &stream, current).await?;
                    position.last_id = Some(last);
                    // Only a load bracketed by the same complete epoch saw the whole state: a flush
                    // and a restore during the load show as a changed epoch.
                    let after = epoch::read(&mut conn, &self.keys).await?;
                    if after.complete() == Some(current) {
                        position.epoch = Some(current.to_owned());
                        self.status.heard_from_redis();
                    }
                    seen = after;
                    continue;
                }
                None => {
                    if position.epoch.take().is_some() {
                        tracing::warn!(
                            "the revocation state in Redis was lost; failing closed after the grace \
                             unless the auth server restores it"
                        );
                    }
                }
            }
            if let (Some(every), Some(current), Some(last_id)) =
                (self.snapshots, &position.epoch, &position.last_id)
                && last_snapshot.elapsed() >= every
            {
                last_snapshot = std::time::Instant::now();
                snapshot::store(&mut conn, &self.keys, every, (&self.index, current, last_id)).await?;
            }
            if unix_now() - last_prune >= 30 {
                last_prune = unix_now();
                self.index.prune(last_prune);
            }
            let Some(from) = position.last_id.as_deref() else {
                // Nothing loaded yet: the stream is read in full once the state is complete.
                tokio::time::sleep(UNKNOWN_POLL).await;
                seen = epoch::read(&mut conn, &self.keys).await?;
                continue;
            };
            // Waiting for a restore, poll briefly so the index vouches again soon after it commits.
            let block = if position.epoch.is_some() {
                BLOCK
            } else {
                UNKNOWN_POLL
            };
            let (epoch_value, reply): (Option<String>, Value) = redis::pipe()
                .cmd("GET")
                .arg(self.keys.epoch())
                .cmd("XREAD")
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&stream)
                .arg(from)
                .query_async(&mut conn)
                .await?;
            // Entries only ever add revocations, so they are applied whatever the epoch says.
            if let Some(last) = self.apply(read_entries(&reply)) {
                position.last_id = Some(last);
            }
            seen = Epoch::parse(epoch_value.as_deref());
        }
    }

    /// Reads the snapshot taken under `epoch`, if there is one, and the stream after it, or else
    /// the whole stream (it holds exactly the revocations that can still matter); returns the id to
    /// follow from. Several loaders, each on its own connection, share the stream's time span (see
    /// [`LoadQueue`]), so pages are parsed while Redis produces others.
    async fn load(
        &self,
        conn: &mut MultiplexedConnection,
        info: &ConnectionInfo,
        stream: &str,
        epoch: &str,
    ) -> redis::RedisResult<String> {
        let started = std::time::Instant::now();
        let bound = async |command: &str, from: &str, to: &str, conn: &mut MultiplexedConnection| {
            let reply: Value = redis::cmd(command)
                .arg(stream)
                .arg(from)
                .arg(to)
                .arg("COUNT")
                .arg(1)
                .query_async(conn)
                .await?;
            redis::RedisResult::Ok(
                entries(&reply)
                    .first()
                    .and_then(|entry| text(entry_parts(entry)?.0)),
            )
        };
        let resume = snapshot::restore(conn, &self.keys, epoch, &self.index).await?;
        let after = resume
            .as_ref()
            .map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let first = bound("XRANGE", &after, "+", conn).await?;
        let last = bound("XREVRANGE", "+", "-", conn).await?;
        let (Some(first), Some(last)) = (first, last) else {
            return self.loaded(started, resume.unwrap_or_else(|| EMPTY.to_owned()));
        };
        if resume.is_none() {
            let length: usize = redis::cmd("XLEN").arg(stream).query_async(conn).await?;
            self.index.reserve(length);
        }
        let (Some(low), Some(high)) = (position(&first), position(&last)) else {
            return Err(std::io::Error::other("the stream holds an entry id that is not ms-seq").into());
        };
        let loaders = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 4)
            * PARTS_PER_CORE;
        let queue = Arc::new(LoadQueue::new(Span { low, high }.split_evenly(loaders as u128)));
        let mut tasks = Vec::new();
        for _ in 0..loaders {
            let (info, tls) = (info.clone(), self.source.rustls_config());
            let (index, stream, queue) = (self.index.clone(), stream.to_owned(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let outcome = load_spans(&info, tls, &stream, &index, &queue).await;
                if outcome.is_err() {
                    queue.fail();
                }
                outcome
            }));
        }
        for task in tasks {
            task.await.map_err(std::io::Error::other)??;
        }
        self.loaded(started, last)
    }

    fn loaded(&self, started: std::time::Instant, last: String) -> redis::RedisResult<String> {
        self.index.prune(unix_now());
        self.status.loads.fetch_add(1, Ordering::AcqRel);
        tracing::info!(
            entries = self.index.len(),
            seconds = started.elapsed().as_secs_f64(),
            "revocation index loaded"
        );
        Ok(last)
    }

    /// Indexes stream entries in place and returns the id of the last one.
    fn apply(&self, entries: &[Value]) -> Option<String> {
        apply(&self.index, entries)
    }
}

/// Indexes stream entries in place and returns the id of the last one.
fn apply(index: &RevocationIndex, entries: &[Value]) -> Option<String> {
    let last = entries.last().and_then(|entry| text(entry_parts(entry)?.0));
    index.apply_refs(entries.iter().filter_map(|entry| {
        let (_, fields) = entry_parts(entry)?;
        let pairs = fields
            .chunks_exact(2)
            .filter_map(|pair| Some((bytes(&pair[0])?, bytes(&pair[1])?)));
        RevocationRef::from_stream_fields(pairs)
    }));
    last
}

/// Reads spans from `queue` into `index` until none is left, on a connection of its own, handing
/// half of what remains of a span to an idle loader after each full page.
async fn load_spans(
    info: &ConnectionInfo,
    tls: Option<Arc<ClientConfig>>,
    stream: &str,
    index: &RevocationIndex,
    queue: &LoadQueue,
) -> std::io::Result<()> {
    let mut reader = RangeReader::connect(info, tls).await?;
    while let Some(mut span) = queue.next().await {
        loop {
            let bounds = (entry_id(span.low), entry_id(span.high));
            let page = reader
                .read_into(stream, (&bounds.0, &bounds.1), PAGE, index)
                .await?;
            match page.last_id.as_deref().and_then(position) {
                Some(last) if page.entries == PAGE && last < span.high => {
                    span = queue.share(Span {
                        low: last + 1,
                        high: span.high,
                    });
                }
                _ => break,
            }
        }
        queue.finished();
    }
    Ok(())
}

/// Whether the stream still holds the entry `id`.
async fn holds(conn: &mut MultiplexedConnection, stream: &str, id: &str) -> redis::RedisResult<bool> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(!entries(&reply).is_empty())
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    Some(String::from_utf8_lossy(bytes(value)?).into_owned())
}

/// The entries of an `XRANGE` reply: `[[id, [field, value, …]], …]`.
fn entries(reply: &Value) -> &[Value] {
    match reply {
        Value::Array(entries) => entries,
        _ => &[],
    }
}

/// The entries of a one-stream `XREAD` reply: nil, or `[[key, entries]]` (a map in RESP3).
fn read_entries(reply: &Value) -> &[Value] {
    match reply {
        Value::Array(streams) => match streams.first() {
            Some(Value::Array(stream)) => stream.get(1).map_or(&[], entries),
            _ => &[],
        },
        Value::Map(streams) => streams.first().map_or(&[], |(_, stream)| entries(stream)),
        _ => &[],
    }
}

/// An entry's id and its flat field/value list.
fn entry_parts(entry: &Value) -> Option<(&Value, &[Value])> {
    match entry {
        Value::Array(parts) if parts.len() == 2 => match &parts[1] {
            Value::Array(fields) => Some((&parts[0], fields)),
            _ => None,
        },
        _ => None,
    }
}
