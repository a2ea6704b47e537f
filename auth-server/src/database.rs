//! The PostgreSQL pool and its readiness checks.

use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use auth_core::readiness::ReadinessCheck;

/// A pool that connects lazily, so the server starts (not ready) while the database is down.
pub fn pool(options: PgConnectOptions, max_connections: u32, timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(timeout)
        .connect_lazy_with(options)
}

/// Readiness: the database answers a query.
pub struct DatabaseCheck(pub PgPool);

impl ReadinessCheck for DatabaseCheck {
    fn name(&self) -> &'static str {
        "database"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
    }
}

/// Readiness: every migration this build knows is applied (the migrator Job has run).
pub struct SchemaCheck(pub PgPool);

impl ReadinessCheck for SchemaCheck {
    fn name(&self) -> &'static str {
        "schema"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.0.acquire().await.map_err(|error| error.to_string())?;
            let summary = migrator::schema::summary(&mut conn)
                .await
                .map_err(|error| error.to_string())?;
            if summary.current {
                Ok(())
            } else {
                Err(format!(
                    "schema at version {:?} with {} pending: run `migrator up`",
                    summary.version, summary.pending
                ))
            }
        })
    }
}
