//! Deleting what no longer matters, in bounded batches, by one replica at a time (a PostgreSQL
//! advisory lock held by a transaction open for the run): dead sessions' refresh-token chains,
//! sessions too old to make their address known, used or expired single-use tokens, expired
//! revocations, delivered mail, old known devices, and audit entries past their retention.

use std::collections::BTreeMap;
use std::time::Duration;

use auth_core::shutdown::Shutdown;
use prometheus::IntCounterVec;
use serde::Deserialize;
use sqlx::PgPool;

/// The advisory lock key ("authclen").
const LOCK_KEY: i64 = 0x6175_7468_636c_656e;

/// `AUTH_CLEANUP__*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CleanupSettings {
    /// How often it runs (on one replica).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows deleted per statement.
    pub batch: i64,
    /// How long audit entries are kept.
    #[serde(with = "humantime_serde")]
    pub audit_retention: Duration,
    /// How long ended sessions keep their refresh tokens, and delivered mail its row (for
    /// support questions).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for CleanupSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            batch: 1000,
            audit_retention: Duration::from_secs(365 * 86_400),
            grace: Duration::from_secs(86_400),
        }
    }
}

/// The deleting.
#[derive(Clone)]
pub struct Cleanup {
    /// PostgreSQL.
    pub db: PgPool,
    /// The settings.
    pub settings: CleanupSettings,
    /// How long a session makes its address known (it is kept that long).
    pub known_source_window: Duration,
    /// Rows removed, by what.
    pub removed: IntCounterVec,
}

/// What one run removed, by what; `None` when another replica was running it.
pub type Report = Option<BTreeMap<&'static str, u64>>;

impl Cleanup {
    /// Each table and the condition of its dead rows (`$1` grace, `$2` known-source window, `$3`
    /// audit retention, all in seconds).
    fn targets() -> [(&'static str, &'static str); 8] {
        [
            (
                "refresh_tokens",
                "session_id IN (SELECT id FROM sessions WHERE coalesce(revoked_at, expires_at) < now() - make_interval(secs => $1))",
            ),
            (
                "sessions",
                "coalesce(revoked_at, expires_at) < now() AND created_at < now() - make_interval(secs => $2)",
            ),
            (
                "password_reset_tokens",
                "used_at IS NOT NULL OR expires_at < now()",
            ),
            (
                "email_verification_tokens",
                "used_at IS NOT NULL OR expires_at < now()",
            ),
            ("revoked_tokens", "expires_at < now()"),
            ("mail_outbox", "done_at < now() - make_interval(secs => $1)"),
            (
                "known_devices",
                "last_seen_at < now() - make_interval(secs => $2)",
            ),
            ("audit_logs", "created_at < now() - make_interval(secs => $3)"),
        ]
    }

    /// One run, unless another replica holds the lock. The lock belongs to a transaction kept
    /// open for the run (and released with it, however the run ends), so it also holds behind a
    /// pooler that hands out server connections per transaction.
    pub async fn run_once(&self) -> Result<Report, sqlx::Error> {
        let mut lock = self.db.begin().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .fetch_one(&mut *lock)
            .await?;
        if !locked {
            return Ok(None);
        }
        let mut conn = self.db.acquire().await?;
        let report = self.delete_all(&mut conn).await?;
        lock.commit().await?;
        Ok(Some(report))
    }

    async fn delete_all(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<BTreeMap<&'static str, u64>, sqlx::Error> {
        let seconds = |duration: Duration| duration.as_secs_f64();
        let mut report = BTreeMap::new();
        for (table, condition) in Self::targets() {
            // Built from the constants above only.
            let statement = format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {table} WHERE {condition} LIMIT $4))"
            );
            let mut total = 0;
            loop {
                let deleted = sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
                    .bind(seconds(self.settings.grace))
                    .bind(seconds(self.known_source_window))
                    .bind(seconds(self.settings.audit_retention))
                    .bind(self.settings.batch)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                total += deleted;
                if deleted < u64::try_from(self.settings.batch).unwrap_or(u64::MAX) {
                    break;
                }
            }
            self.removed.with_label_values(&[table]).inc_by(total);
            report.insert(table, total);
        }
        Ok(report)
    }

    /// Runs every interval until shutdown.
    pub fn spawn(self, shutdown: Shutdown) {
        tokio::spawn(async move {
            loop {
                match self.run_once().await {
                    Ok(Some(report)) => tracing::info!(?report, "cleanup"),
                    Ok(None) => tracing::debug!("cleanup: another replica is running it"),
                    Err(error) => tracing::warn!(%error, "cleanup failed; trying again at the next interval"),
                }
                tokio::select! {
                    () = tokio::time::sleep(self.settings.interval) => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }
}
