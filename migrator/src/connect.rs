//! Connecting to a database that may not be up yet (a Job often starts before its database).

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use crate::Error;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects, retrying transient failures with exponential backoff until `timeout` has passed.
/// Failures that retrying cannot fix (bad credentials, missing database) return at once.
pub async fn connect_with_retry(options: &PgConnectOptions, timeout: Duration) -> Result<PgPool, Error> {
    let deadline = Instant::now() + timeout;
    let mut backoff = FIRST_BACKOFF;
    loop {
        // One plain connection per attempt: a pool would retry on its own and hide each failure.
        let error = match connect_once(options).await {
            Ok(()) => {
                return PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(ATTEMPT_TIMEOUT)
                    .connect_with(options.clone())
                    .await
                    .map_err(Error::from);
            }
            Err(error) if !is_transient(&error) => return Err(Error::Refused(error.to_string())),
            Err(error) => error,
        };
        if Instant::now() + backoff >= deadline {
            return Err(Error::Unavailable(format!(
                "not reachable after {timeout:?}: {error}"
            )));
        }
        tracing::info!(error = %error, retry_in = ?backoff, "database not reachable yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One connection attempt, bounded in time, closed again on success.
pub async fn connect_once(options: &PgConnectOptions) -> Result<(), sqlx::Error> {
    let conn = tokio::time::timeout(ATTEMPT_TIMEOUT, PgConnection::connect_with(options))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    let _ = conn.close().await;
    Ok(())
}

/// Whether waiting might help: the server is down, starting, or out of connections. A TLS
/// failure (the certificate does not verify) comes as invalid data and is final.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(io) => io.kind() != std::io::ErrorKind::InvalidData,
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(error) => matches!(
            error.code().as_deref(),
            // cannot_connect_now (starting up or shutting down), too_many_connections
            Some("57P03" | "53300")
        ),
        _ => false,
    }
}
