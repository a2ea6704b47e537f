//! Revocations: recorded durably in PostgreSQL, published to Redis (key + stream), and restored
//! from PostgreSQL under a new epoch whenever Redis loses them, so a flushed Redis never brings a
//! revoked token back.

use std::time::Duration;

use auth_core::redis::{RedisManager, RedisPool};
use auth_core::revocation::epoch::{self, Epoch, RestoreClaim};
use auth_core::revocation::{RedisKeys, Revocation, publish, unix_now};
use prometheus::IntCounterVec;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store;

/// How many Redis replicas a revocation waits for (`WAIT`) before it is committed and
/// acknowledged, so that a failover promoting one of them does not lose it; zero acknowledges what
/// the primary took. Replicas that do not confirm in time do not fail the request: undoing a
/// published revocation is impossible (the sidecars may have it already), so it is committed
/// anyway, and the server's restore after a failover (a new Redis process) republishes it from
/// PostgreSQL.
#[derive(Clone)]
pub struct ReplicaAcks {
    /// Replicas.
    pub replicas: u32,
    /// How long to wait for them.
    pub timeout: Duration,
    /// Waits by outcome (`confirmed`, `timed_out`).
    pub outcomes: IntCounterVec,
}

/// Records and publishes revocations.
#[derive(Clone)]
pub struct Revoker {
    db: PgPool,
    redis: RedisPool,
    keys: RedisKeys,
    access_ttl: Duration,
    leeway: Duration,
    published: IntCounterVec,
    replica_acks: ReplicaAcks,
}

impl Revoker {
    /// A revoker for tokens living `access_ttl` (plus `leeway`).
    pub fn new(
        db: PgPool,
        redis: RedisPool,
        keys: RedisKeys,
        (access_ttl, leeway): (Duration, Duration),
        published: IntCounterVec,
        replica_acks: ReplicaAcks,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            access_ttl,
            leeway,
            published,
            replica_acks,
        }
    }

    fn horizon(&self) -> i64 {
        unix_now() + i64::try_from((self.access_ttl + self.leeway).as_secs()).unwrap_or(i64::MAX / 2)
    }

    /// Revokes one token until it expires.
    pub fn token(&self, jti: Uuid, exp: i64) -> Revocation {
        Revocation::token(jti, exp + i64::try_from(self.leeway.as_secs()).unwrap_or(0))
    }

    /// Revokes every token signed by a key (a compromised one) that can still be live.
    pub fn key(&self, kid: &str) -> Revocation {
        Revocation::key(kid, self.horizon())
    }

    /// Revokes every token of a session.
    pub fn session(&self, sid: Uuid) -> Revocation {
        Revocation::session(sid, self.horizon())
    }

    /// Revokes every token of a user issued up to now and every token of the sessions that just
    /// ended. Called inside the transaction that ended them, after their rows are locked: a
    /// refresh that committed just before may still mint a token dated after this instant, but
    /// never outside its session.
    pub fn user_and_sessions(&self, user_id: Uuid, sessions: &[Uuid]) -> Vec<Revocation> {
        let mut revocations: Vec<Revocation> = sessions.iter().map(|sid| self.session(*sid)).collect();
        revocations.push(self.user(user_id));
        revocations
    }

    /// Revokes every token of a user issued up to now (their sessions stay).
    pub fn user(&self, user_id: Uuid) -> Revocation {
        Revocation::user(user_id, unix_now(), self.horizon())
    }

    /// Stores `revocations` in the caller's transaction, so they commit with the change they
    /// belong to.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        revocations: &mut [Revocation],
        reason: &str,
    ) -> Result<(), ApiError> {
        store::revoked::record(conn, revocations, reason).await?;
        Ok(())
    }

    /// Publishes `revocations`, then commits `tx` that records them: an operation that answers
    /// "done" is one every sidecar can already know about. When Redis cannot take them, nothing is
    /// committed and the caller answers 503 (a Redis that comes back with its epoch intact, after
    /// a freeze or a partition, would otherwise be trusted before a later publish reached it).
    pub async fn publish_then_commit(
        &self,
        tx: sqlx::Transaction<'_, sqlx::Postgres>,
        revocations: &[Revocation],
    ) -> Result<(), ApiError> {
        let mut conn = self.redis.get().await?;
        self.publish_on(&mut conn, revocations).await?;
        let ReplicaAcks {
            replicas,
            timeout,
            outcomes,
        } = &self.replica_acks;
        if *replicas > 0 {
            // WAIT counts the replicas holding every write this connection made so far.
            let held: u32 = redis::cmd("WAIT")
                .arg(*replicas)
                .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1))
                .query_async(&mut *conn)
                .await?;
            let outcome = if held >= *replicas {
                "confirmed"
            } else {
                "timed_out"
            };
            outcomes.with_label_values(&[outcome]).inc();
            if held < *replicas {
                tracing::warn!(
                    held,
                    wanted = replicas,
                    "too few Redis replicas confirmed a revocation in time"
                );
            }
        }
        drop(conn);
        tx.commit().await?;
        Ok(())
    }

    /// Publishes committed revocations now or, when Redis cannot take them, retries in the
    /// background (for revocations the server makes on its own, answering no client's request;
    /// the periodic re-check covers a restart in between).
    pub async fn publish_or_retry(&self, revocations: &[Revocation]) {
        if let Err(error) = self.publish(revocations).await {
            tracing::warn!(error = %error, "cannot publish revocations now; retrying in the background");
            let revoker = self.clone();
            let pending = revocations.to_vec();
            tokio::spawn(async move { revoker.retry(pending).await });
        }
    }

    async fn retry(&self, mut pending: Vec<Revocation>) {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            tokio::time::sleep(backoff).await;
            pending.retain(|revocation| revocation.until > unix_now());
            if pending.is_empty() || self.publish(&pending).await.is_ok() {
                return;
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(2));
        }
    }

    /// Publishes revocations to Redis now.
    pub async fn publish(&self, revocations: &[Revocation]) -> Result<(), ApiError> {
        self.publish_on(&mut self.redis.get().await?, revocations).await
    }

    async fn publish_on(
        &self,
        conn: &mut bb8::PooledConnection<'_, RedisManager>,
        revocations: &[Revocation],
    ) -> Result<(), ApiError> {
        publish(
            &mut **conn,
            &self.keys,
            revocations,
            self.access_ttl + self.leeway,
        )
        .await?;
        for revocation in revocations {
            self.published
                .with_label_values(&[revocation.kind.as_str()])
                .inc();
        }
        Ok(())
    }

    /// Makes Redis hold every revocation that can still matter, under a complete epoch (see
    /// `auth_core::revocation::epoch`). When the epoch is missing, or equals `replace` (a complete
    /// epoch this server saw Redis lose data under), every unexpired revocation is republished and
    /// a new epoch committed — again and again until no flush interrupts it; when Redis is intact,
    /// only revocations whose key is missing are republished (a publish that failed and whose retry
    /// died with its server).
    pub async fn restore(&self, mut replace: Option<String>) -> anyhow::Result<Restored> {
        loop {
            let mut conn = self.redis.get().await?;
            let claim = epoch::begin_restore(&mut *conn, &self.keys, replace.take().as_deref()).await?;
            drop(conn);
            let token = match claim {
                RestoreClaim::Intact(epoch) => {
                    let republished = self.republish_missing().await?;
                    return Ok(Restored {
                        epoch,
                        republished,
                        full: false,
                    });
                }
                RestoreClaim::Restore(token) => token,
            };
            // PostgreSQL is read only after the restore is marked, so everything revoked before
            // Redis lost its data is in this read.
            let revocations = store::revoked::unexpired(&self.db).await?;
            self.publish(&revocations)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            let mut conn = self.redis.get().await?;
            if epoch::commit_restore(&mut *conn, &self.keys, &token).await? {
                return Ok(Restored {
                    epoch: token,
                    republished: revocations.len(),
                    full: true,
                });
            }
            tracing::warn!("Redis lost the revocations again during their restore; restoring again");
        }
    }

    /// Publishes every unexpired revocation whose key is missing from Redis; returns how many.
    async fn republish_missing(&self) -> anyhow::Result<usize> {
        let revocations = store::revoked::unexpired(&self.db).await?;
        if revocations.is_empty() {
            return Ok(0);
        }
        let mut conn = self.redis.get().await?;
        let mut exists = redis::pipe();
        for revocation in &revocations {
            exists.exists(self.keys.revoked(revocation.kind, &revocation.id));
        }
        let present: Vec<bool> = exists.query_async(&mut *conn).await?;
        drop(conn);
        let missing: Vec<Revocation> = revocations
            .into_iter()
            .zip(present)
            .filter_map(|(revocation, present)| (!present).then_some(revocation))
            .collect();
        if !missing.is_empty() {
            self.publish(&missing)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
        }
        Ok(missing.len())
    }

    /// Claims the periodic re-check for `lease`; false when another replica holds it.
    pub async fn claim_resync(&self, lease: Duration) -> anyhow::Result<bool> {
        let mut conn = self.redis.get().await?;
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.resync_lease())
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .query_async(&mut *conn)
            .await?;
        Ok(claimed.is_some())
    }

    /// The epoch and the identity of the Redis process, in one round trip.
    pub async fn observe(&self) -> anyhow::Result<RedisView> {
        let mut conn = self.redis.get().await?;
        let (epoch, info): (Option<String>, String) = redis::pipe()
            .cmd("GET")
            .arg(self.keys.epoch())
            .cmd("INFO")
            .arg("server")
            .query_async(&mut *conn)
            .await?;
        let run_id = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned());
        Ok(RedisView {
            epoch: Epoch::parse(epoch.as_deref()),
            run_id,
        })
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// The complete epoch Redis holds now.
    pub epoch: String,
    /// Revocations written.
    pub republished: usize,
    /// Whether everything was republished under a new epoch (Redis had lost its data).
    pub full: bool,
}

/// What the server sees of Redis.
#[derive(Debug)]
pub struct RedisView {
    /// The revocation epoch.
    pub epoch: Epoch,
    /// The Redis process's `run_id` (`None` where `INFO` is not allowed): a new one means another
    /// process answers now, which may hold less than the epoch it carries says.
    pub run_id: Option<String>,
}
