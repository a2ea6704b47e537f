//! How the verifier fleet scales against one Redis: many stream followers in this process (the
//! sidecar's own `StreamFollower` and index, each on its own connections, as that many sidecars
//! would be), measured for
//! - a start-up storm: every sidecar (re)starting at once, as in a rolling deploy of all pods,
//!   with 100,000 and 1,000,000 revocations on the stream — time until all are loaded, Redis CPU
//!   spent, memory per indexed revocation in a follower and per revocation in Redis — reading
//!   the whole stream, and starting from the snapshot the auth server keeps;
//! - steady state with many followers: Redis CPU idle and under a stream of revocations, and the
//!   propagation time until the last of them has indexed each one (p50, p99, max).

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth_core::revocation::{
    FollowerStatus, RedisKeys, Revocation, RevocationIndex, StreamFollower, publish, unix_now,
};
use auth_core::shutdown::{self, ShutdownTrigger};
use platform_tests::RedisServer;

use crate::load::percentile;
use crate::verifier::rss_mib;

const STEADY_FOLLOWERS: usize = 200;
const STEADY_STREAM: usize = 10_000;
const PROPAGATIONS: usize = 200;
const RETENTION: Duration = Duration::from_secs(930);

struct Fleet {
    followers: Vec<(Arc<RevocationIndex>, Arc<FollowerStatus>)>,
    trigger: ShutdownTrigger,
}

impl Fleet {
    fn start(redis_url: &str, count: usize) -> anyhow::Result<Self> {
        Self::start_with(redis_url, count, None)
    }

    /// `count` followers; with `snapshots`, each also writes the snapshot (as the server does).
    fn start_with(redis_url: &str, count: usize, snapshots: Option<Duration>) -> anyhow::Result<Self> {
        let source = auth_core::redis::RedisSource::new(redis_url, &Default::default(), &[])?;
        let (trigger, shutdown) = shutdown::channel();
        let followers = (0..count)
            .map(|_| {
                let index = Arc::new(RevocationIndex::default());
                let status = Arc::new(FollowerStatus::default());
                let follower = StreamFollower::new(
                    source.clone(),
                    RedisKeys::default(),
                    index.clone(),
                    status.clone(),
                );
                let follower = match snapshots {
                    Some(every) => follower.writing_snapshots(every),
                    None => follower,
                };
                tokio::spawn(follower.run(shutdown.clone()));
                (index, status)
            })
            .collect();
        Ok(Self { followers, trigger })
    }

    async fn until_loaded(&self) {
        while !self.followers.iter().all(|(_, status)| status.loads() >= 1) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn stop(self) {
        self.trigger.trigger();
    }
}

async fn info_field(
    conn: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> anyhow::Result<f64> {
    let info: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:"))?.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} in INFO {section}"))
}

async fn redis_cpu(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    Ok(info_field(conn, "cpu", "used_cpu_user").await? + info_field(conn, "cpu", "used_cpu_sys").await?)
}

fn revocation() -> Revocation {
    Revocation::token(uuid::Uuid::new_v4(), unix_now() + 900)
}

/// `count` revocations published as the server publishes them (key and stream entry), under a
/// complete epoch.
async fn seed(conn: &mut redis::aio::MultiplexedConnection, count: usize) -> anyhow::Result<()> {
    platform_tests::redis::mark_restored(conn).await;
    for start in (0..count).step_by(10_000) {
        let batch: Vec<Revocation> = (start..count.min(start + 10_000)).map(|_| revocation()).collect();
        publish(conn, &RedisKeys::default(), &batch, RETENTION).await?;
    }
    Ok(())
}

/// Writes the snapshot the way the auth server does (a follower writing it) and waits for it.
async fn write_snapshot(url: &str, conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<usize> {
    let writer = Fleet::start_with(url, 1, Some(Duration::from_millis(100)))?;
    let bytes = loop {
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(RedisKeys::default().snapshot())
            .query_async(conn)
            .await?;
        if let Some(bytes) = stored {
            break bytes.len();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    writer.stop();
    Ok(bytes)
}

async fn storm(revocations: usize, sidecars: usize, snapshot: bool) -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let empty = info_field(&mut conn, "memory", "used_memory").await?;
    seed(&mut conn, revocations).await?;
    let seeded = info_field(&mut conn, "memory", "used_memory").await?;
    let from = if snapshot {
        let bytes = write_snapshot(&url, &mut conn).await?;
        format!("from a {:.1} MiB snapshot", bytes as f64 / 1024.0 / 1024.0)
    } else {
        "from the stream     ".to_owned()
    };
    let rss_before = rss_mib(std::process::id());
    let cpu_before = redis_cpu(&mut conn).await?;
    let started = Instant::now();
    let fleet = Fleet::start(&url, sidecars)?;
    fleet.until_loaded().await;
    let took = started.elapsed();
    let cpu = redis_cpu(&mut conn).await? - cpu_before;
    let rss = rss_mib(std::process::id()) - rss_before;
    #[allow(clippy::cast_precision_loss)]
    let (entries, count) = ((sidecars * revocations) as f64, revocations as f64);
    let (per_follower, per_redis, per_entry) = (
        rss * 1024.0 * 1024.0 / entries,
        (seeded - empty) / count,
        cpu * 1e6 / entries,
    );
    println!(
        "start-up storm {from}: {sidecars:>3} sidecars at once, {revocations:>9} revocations: all loaded in {:>6.2} s; \
         Redis CPU {cpu:>6.2} s ({per_entry:.2} µs per entry served); {per_follower:.0} B per indexed revocation \
         in a sidecar; {per_redis:.0} B per revocation in Redis (key + stream entry)",
        took.as_secs_f64(),
    );
    fleet.stop();
    Ok(())
}

async fn steady() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let url = redis.url(0);
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    seed(&mut conn, STEADY_STREAM).await?;
    let mut fleets = Vec::new();
    // Started in groups, so this measures the steady state, not another storm.
    for _ in 0..STEADY_FOLLOWERS / 25 {
        let fleet = Fleet::start(&url, 25)?;
        fleet.until_loaded().await;
        fleets.push(fleet);
    }
    let client_memory = info_field(&mut conn, "memory", "mem_clients_normal").await?;
    let clients = info_field(&mut conn, "clients", "connected_clients").await?;
    let cpu = redis_cpu(&mut conn).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle_cpu = (redis_cpu(&mut conn).await? - cpu) / 5.0;

    let all: Vec<&Arc<RevocationIndex>> = fleets
        .iter()
        .flat_map(|fleet| fleet.followers.iter().map(|(index, _)| index))
        .collect();
    let mut expected = all[0].len();
    let cpu = redis_cpu(&mut conn).await?;
    let started = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..PROPAGATIONS {
        publish(&mut conn, &RedisKeys::default(), &[revocation()], RETENTION).await?;
        let published = Instant::now();
        expected += 1;
        while all.iter().any(|index| index.len() < expected) {
            tokio::task::yield_now().await;
        }
        samples.push(published.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy_cpu = (redis_cpu(&mut conn).await? - cpu) / started.elapsed().as_secs_f64();
    samples.sort_by(f64::total_cmp);
    println!(
        "steady state: {STEADY_FOLLOWERS} followers ({clients} Redis clients, {:.1} KiB of Redis client memory each): \
         Redis CPU {:.1} % idle, {:.1} % while {PROPAGATIONS} revocations arrive (~{:.0}/s)",
        client_memory / 1024.0 / clients,
        idle_cpu * 100.0,
        busy_cpu * 100.0,
        PROPAGATIONS as f64 / started.elapsed().as_secs_f64()
    );
    println!(
        "propagation to the last of {STEADY_FOLLOWERS} followers: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {PROPAGATIONS} revocations",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples[samples.len() - 1]
    );
    for fleet in fleets {
        fleet.stop();
    }
    Ok(())
}

/// Runs the capacity measurements and prints them.
pub async fn run() -> anyhow::Result<()> {
    println!(
        "verifier fleet capacity: release build, followers in this process, one redis-server, 2 shared cores"
    );
    for snapshot in [false, true] {
        storm(100_000, 50, snapshot).await?;
        storm(1_000_000, 10, snapshot).await?;
    }
    steady().await
}
