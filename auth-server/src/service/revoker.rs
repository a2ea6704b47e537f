//! Revocations: recorded durably in PostgreSQL, published to Redis (key + stream), and
//! re-synchronised from PostgreSQL so a flushed Redis never brings a revoked token back.

use std::time::Duration;

use auth_core::redis::RedisPool;
use auth_core::revocation::{RedisKeys, Revocation, publish, unix_now};
use auth_core::shutdown::Shutdown;
use prometheus::IntCounterVec;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store;

/// Records and publishes revocations.
#[derive(Clone)]
pub struct Revoker {
    db: PgPool,
    redis: RedisPool,
    keys: RedisKeys,
    access_ttl: Duration,
    leeway: Duration,
    published: IntCounterVec,
}

impl Revoker {
    /// A revoker for tokens living `access_ttl` (plus `leeway`).
    pub fn new(
        db: PgPool,
        redis: RedisPool,
        keys: RedisKeys,
        access_ttl: Duration,
        leeway: Duration,
        published: IntCounterVec,
    ) -> Self {
        Self {
            db,
            redis,
            keys,
            access_ttl,
            leeway,
            published,
        }
    }

    fn horizon(&self) -> i64 {
        unix_now() + i64::try_from((self.access_ttl + self.leeway).as_secs()).unwrap_or(i64::MAX / 2)
    }

    /// Revokes one token until it expires.
    pub fn token(&self, jti: Uuid, exp: i64) -> Revocation {
        Revocation::token(jti, exp + i64::try_from(self.leeway.as_secs()).unwrap_or(0))
    }

    /// Revokes every token of a session.
    pub fn session(&self, sid: Uuid) -> Revocation {
        Revocation::session(sid, self.horizon())
    }

    /// Revokes every token of a user issued up to now.
    pub fn user(&self, user_id: Uuid) -> Revocation {
        Revocation::user(user_id, unix_now(), self.horizon())
    }

    /// Stores `revocations` in the caller's transaction, so they commit with the change they
    /// belong to.
    pub async fn record(
        &self,
        conn: &mut PgConnection,
        revocations: &[Revocation],
        reason: &str,
    ) -> Result<(), ApiError> {
        store::revoked::record(conn, revocations, reason).await?;
        Ok(())
    }

    /// Publishes committed revocations to Redis. They are durable already, so if Redis is down the
    /// request still succeeds: they are retried in the background until Redis is back (sidecars
    /// fail closed meanwhile, so nothing revoked is accepted), and the periodic re-sync covers a
    /// restart in between.
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
        let retention = self.access_ttl + self.leeway;
        let mut conn = self.redis.get().await?;
        for revocation in revocations {
            publish(&mut *conn, &self.keys, revocation, retention).await?;
            self.published
                .with_label_values(&[revocation.kind.as_str()])
                .inc();
        }
        Ok(())
    }

    /// Publishes every unexpired revocation whose key is missing from Redis; returns how many.
    pub async fn resync(&self) -> anyhow::Result<usize> {
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

    /// Re-syncs now and then every `interval` until shutdown.
    pub fn spawn_resync(self, interval: Duration, shutdown: Shutdown) {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = shutdown.clone().wait() => return,
                }
                match self.resync().await {
                    Ok(0) => {}
                    Ok(restored) => {
                        tracing::warn!(restored, "restored revocations missing from Redis")
                    }
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "revocation re-sync failed")
                    }
                }
            }
        });
    }
}
