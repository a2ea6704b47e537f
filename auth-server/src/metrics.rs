//! The server's own metrics (HTTP request metrics come from `auth_core::http`).

use auth_core::redis::RedisPool;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use sqlx::PgPool;

/// Counters and gauges of the account and token flows.
#[derive(Clone)]
pub struct ServerMetrics {
    /// Logins by result (`success`, `invalid_credentials`, `rate_limited`).
    pub logins: IntCounterVec,
    /// Access tokens issued, by grant (`register`, `login`, `refresh`, `password_change`).
    pub tokens_issued: IntCounterVec,
    /// Refreshes by result (`rotated`, `replayed`, `reused`, `invalid`).
    pub refreshes: IntCounterVec,
    /// Revocations published, by kind (`jti`, `sid`, `user`, `kid`).
    pub revocations: IntCounterVec,
    /// Full restores of the revocations into Redis, by trigger (`start`, `state_lost`, `redis_replaced`).
    pub revocation_restores: IntCounterVec,
    /// Periodic re-checks of the revocations, by outcome (`ran`, or `skipped`: another replica's).
    pub revocation_resyncs: IntCounterVec,
    /// Waits for Redis replicas to hold a revocation, by outcome (`confirmed`, `timed_out`).
    pub replica_waits: IntCounterVec,
    /// Bearer tokens refused, by reason.
    pub token_rejections: IntCounterVec,
    /// Password hashes running or waiting.
    pub hash_queue_depth: IntGauge,
    /// Password hash jobs by outcome (`hashed`, `refused`, `abandoned`).
    pub hash_jobs: IntCounterVec,
    /// Mails by kind and outcome (`sent`, `failed`, `skipped`, `expired`).
    pub mails: IntCounterVec,
    /// Mails waiting in the outbox.
    pub mail_outbox_depth: IntGauge,
    /// Rows the cleanup removed, by table.
    pub cleanup_removed: IntCounterVec,
    /// Requests refused by a rate limit, by limit.
    pub rate_limited: IntCounterVec,
}

/// A counter by one label, with a zero series for each of `known` values from the start, so
/// rate() and alerts see a zero rather than nothing.
fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    (label, known): (&str, &[&str]),
) -> prometheus::Result<IntCounterVec> {
    let counter = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(counter.clone()))?;
    for value in known {
        counter.with_label_values(&[value]);
    }
    Ok(counter)
}

impl ServerMetrics {
    /// Registers every metric.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let hash_queue_depth =
            IntGauge::new("password_hash_queue_depth", "Password hashes running or waiting")?;
        registry.register(Box::new(hash_queue_depth.clone()))?;
        let mail_outbox_depth = IntGauge::new("mail_outbox_depth", "Mails waiting in the outbox")?;
        registry.register(Box::new(mail_outbox_depth.clone()))?;
        let mails = IntCounterVec::new(
            Opts::new(
                "mails_total",
                "Mails by kind and outcome: sent, failed (retried), skipped (nothing to send), expired",
            ),
            &["kind", "outcome"],
        )?;
        registry.register(Box::new(mails.clone()))?;
        for kind in ["password_reset", "email_verification"] {
            for outcome in ["sent", "failed", "skipped", "expired"] {
                mails.with_label_values(&[kind, outcome]);
            }
        }
        Ok(Self {
            logins: counter(
                registry,
                "logins_total",
                "Login attempts by result",
                ("result", &["success", "invalid_credentials", "rate_limited"]),
            )?,
            tokens_issued: counter(
                registry,
                "tokens_issued_total",
                "Access tokens issued by grant",
                ("grant", &["register", "login", "refresh", "password_change"]),
            )?,
            refreshes: counter(
                registry,
                "refreshes_total",
                "Refresh attempts by result",
                ("result", &["rotated", "replayed", "reused", "invalid"]),
            )?,
            revocations: counter(
                registry,
                "revocations_total",
                "Revocations published by kind",
                ("kind", &["jti", "sid", "user", "kid"]),
            )?,
            revocation_restores: counter(
                registry,
                "revocation_restores_total",
                "Full restores of the revocations into Redis by trigger",
                ("trigger", &["start", "state_lost", "redis_replaced"]),
            )?,
            revocation_resyncs: counter(
                registry,
                "revocation_resyncs_total",
                "Periodic re-checks of the revocations in Redis by outcome (one replica runs each)",
                ("outcome", &["ran", "skipped"]),
            )?,
            replica_waits: counter(
                registry,
                "revocation_replica_waits_total",
                "Waits for Redis replicas to hold a revocation by outcome (AUTH_REDIS_WAIT_REPLICAS)",
                ("outcome", &["confirmed", "timed_out"]),
            )?,
            token_rejections: counter(
                registry,
                "token_rejections_total",
                "Bearer tokens refused by reason",
                ("reason", &[]),
            )?,
            hash_queue_depth,
            hash_jobs: counter(
                registry,
                "password_hash_jobs_total",
                "Password hash jobs by outcome: hashed, refused (queue full or past the deadline), abandoned (the client left)",
                ("outcome", &["hashed", "refused", "abandoned"]),
            )?,
            mails,
            mail_outbox_depth,
            rate_limited: counter(
                registry,
                "rate_limited_total",
                "Requests refused by a rate limit, by limit",
                ("limit", &[]),
            )?,
            cleanup_removed: counter(
                registry,
                "cleanup_removed_total",
                "Rows the cleanup removed by table",
                ("table", &[]),
            )?,
        })
    }
}

/// Pool gauges, read at scrape time so they are never stale.
pub struct PoolCollector {
    database: PgPool,
    redis: RedisPool,
    redis_max: u32,
    connections: IntGaugeVec,
}

impl PoolCollector {
    /// Registers `pool_connections{pool, state}` for both pools.
    pub fn register(
        registry: &Registry,
        database: PgPool,
        redis: RedisPool,
        redis_max: u32,
    ) -> prometheus::Result<()> {
        let connections = IntGaugeVec::new(
            Opts::new(
                "pool_connections",
                "Pool connections by pool and state (open, idle, max)",
            ),
            &["pool", "state"],
        )?;
        registry.register(Box::new(Self {
            database,
            redis,
            redis_max,
            connections,
        }))
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.connections.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let set = |pool: &str, state: &str, value: u64| {
            self.connections
                .with_label_values(&[pool, state])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        set("database", "open", u64::from(self.database.size()));
        set("database", "idle", self.database.num_idle() as u64);
        set(
            "database",
            "max",
            u64::from(self.database.options().get_max_connections()),
        );
        let redis = self.redis.state();
        set("redis", "open", u64::from(redis.connections));
        set("redis", "idle", u64::from(redis.idle_connections));
        set("redis", "max", u64::from(self.redis_max));
        self.connections.collect()
    }
}
