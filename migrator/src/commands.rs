//! What each `migrator` subcommand does against the database.

use std::time::{Duration, Instant};

use auth_core::settings::Environment;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};

use crate::Error;
use crate::schema::{self, MIGRATOR, MigrationStatus, SchemaSummary};

/// The advisory lock every migrator takes for the whole of a schema change ("authmigr").
const LOCK_KEY: i64 = 0x6175_7468_6d69_6772;

/// What a schema-changing command did.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Versions applied by this run, in order.
    pub applied: Vec<i64>,
    /// Versions reverted by this run, in order.
    pub reverted: Vec<i64>,
    /// Where the schema stands afterwards.
    pub schema: SchemaSummary,
}

/// Applies every pending migration.
pub async fn up(pool: &PgPool, lock_timeout: Duration) -> Result<Change, Error> {
    locked_change(pool, lock_timeout, async |conn| {
        MIGRATOR.run(&mut *conn).await?;
        Ok(())
    })
    .await
}

/// Reverts the newest `steps` applied migrations.
pub async fn down(pool: &PgPool, steps: usize, lock_timeout: Duration) -> Result<Change, Error> {
    locked_change(pool, lock_timeout, async |conn| {
        let mut applied: Vec<i64> = schema::status(conn)
            .await?
            .iter()
            .filter(|row| row.applied_at.is_some())
            .map(|row| row.version)
            .collect();
        applied.sort_unstable_by(|a, b| b.cmp(a));
        let target = applied.get(steps).copied().unwrap_or(0);
        MIGRATOR.undo(&mut *conn, target).await?;
        Ok(())
    })
    .await
}

/// Reverts everything and applies everything again; refused in production.
pub async fn reset(pool: &PgPool, environment: Environment, lock_timeout: Duration) -> Result<Change, Error> {
    if environment == Environment::Production {
        return Err(Error::Forbidden(
            "reset is refused in production (MIGRATOR_ENVIRONMENT=production)".to_owned(),
        ));
    }
    locked_change(pool, lock_timeout, async |conn| {
        MIGRATOR.undo(&mut *conn, 0).await?;
        MIGRATOR.run(&mut *conn).await?;
        Ok(())
    })
    .await
}

/// Every migration and where it stands.
pub async fn status(pool: &PgPool) -> Result<Vec<MigrationStatus>, Error> {
    let mut conn = pool.acquire().await?;
    Ok(schema::status(&mut conn).await?)
}

/// Runs `change` on one connection while holding the migrator lock, and reports what it did by
/// comparing the recorded history before and after (under the lock, so a concurrent run's work is
/// never counted as ours).
async fn locked_change(
    pool: &PgPool,
    lock_timeout: Duration,
    change: impl AsyncFnOnce(&mut PgConnection) -> Result<(), Error>,
) -> Result<Change, Error> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn, lock_timeout).await?;
    let result = async {
        let before = applied_versions(&schema::status(&mut conn).await?);
        change(&mut conn).await?;
        let after_rows = schema::status(&mut conn).await?;
        let after = applied_versions(&after_rows);
        Ok(Change {
            applied: after.iter().filter(|v| !before.contains(v)).copied().collect(),
            reverted: before
                .iter()
                .rev()
                .filter(|v| !after.contains(v))
                .copied()
                .collect(),
            schema: schema::summarize(&after_rows),
        })
    }
    .await;
    // Closing the connection would release the lock too; unlocking keeps the pool reusable.
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    result
}

async fn lock(conn: &mut PgConnection, timeout: Duration) -> Result<(), Error> {
    let millis = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1);
    sqlx::query("SELECT set_config('lock_timeout', $1, false)")
        .bind(format!("{millis}ms"))
        .execute(&mut *conn)
        .await?;
    let locked = sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *conn)
        .await;
    sqlx::query("SELECT set_config('lock_timeout', '0', false)")
        .execute(&mut *conn)
        .await?;
    match locked {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(error)) if error.code().as_deref() == Some("55P03") => Err(Error::Locked(
            format!("gave up after {timeout:?} (MIGRATOR_LOCK_TIMEOUT)"),
        )),
        Err(error) => Err(error.into()),
    }
}

fn applied_versions(rows: &[MigrationStatus]) -> Vec<i64> {
    rows.iter()
        .filter(|row| row.applied_at.is_some())
        .map(|row| row.version)
        .collect()
}

/// What `migrator check` reports.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// `SHOW server_version`.
    pub server_version: String,
    /// Round trips of `SELECT 1`, in milliseconds.
    pub latency_ms: Latency,
    /// The pool after the checks.
    pub pool: PoolStatistics,
    /// Where the schema stands.
    pub schema: SchemaSummary,
}

/// Round-trip latency over a few samples.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Fastest sample.
    pub min: f64,
    /// Median sample.
    pub median: f64,
    /// Slowest sample.
    pub max: f64,
}

/// Connection pool statistics.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatistics {
    /// Open connections.
    pub size: u32,
    /// Idle connections.
    pub idle: usize,
    /// The pool's maximum.
    pub max: u32,
}

const LATENCY_SAMPLES: usize = 9;

/// Connectivity, server version, round-trip latency, pool statistics and schema position.
pub async fn check(pool: &PgPool) -> Result<CheckReport, Error> {
    let mut conn = pool.acquire().await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut *conn)
        .await?;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        let start = Instant::now();
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let schema = schema::summary(&mut conn).await?;
    drop(conn);
    Ok(CheckReport {
        server_version,
        latency_ms: Latency {
            min: samples[0],
            median: samples[LATENCY_SAMPLES / 2],
            max: samples[LATENCY_SAMPLES - 1],
        },
        pool: PoolStatistics {
            size: pool.size(),
            idle: pool.num_idle(),
            max: pool.options().get_max_connections(),
        },
        schema,
    })
}

const WAIT_POLL: Duration = Duration::from_millis(500);

/// Blocks until the database is reachable and its schema is current, or `timeout` passes.
pub async fn wait(options: &PgConnectOptions, timeout: Duration) -> Result<SchemaSummary, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(options).await {
            Ok(summary) if summary.current => return Ok(summary),
            Ok(summary) => format!("schema not current ({} pending)", summary.pending),
            Err(error) => error.to_string(),
        };
        if Instant::now() + WAIT_POLL >= deadline {
            return Err(Error::Unavailable(format!("not ready after {timeout:?}: {last}")));
        }
        tracing::debug!(reason = %last, "waiting for the database");
        tokio::time::sleep(WAIT_POLL).await;
    }
}

async fn probe(options: &PgConnectOptions) -> Result<SchemaSummary, sqlx::Error> {
    let mut conn = tokio::time::timeout(WAIT_POLL * 4, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let summary = schema::summary(&mut conn).await;
    let _ = conn.close().await;
    summary
}
