//! The Redis connection pool both the server and the verifier use, and its readiness check.

use std::time::Duration;

use bb8_redis::RedisConnectionManager;
use futures_util::future::BoxFuture;
use redis::IntoConnectionInfo;

use crate::readiness::ReadinessCheck;

/// A pool of multiplexed Redis connections.
pub type RedisPool = bb8::Pool<RedisConnectionManager>;

/// Whether `url` is a usable Redis URL; the message never repeats the URL (it may hold a password).
pub fn validate_url(url: &str) -> Result<(), String> {
    url.into_connection_info()
        .map(|_| ())
        .map_err(|_| "not a valid Redis URL (expected redis://[user:password@]host[:port][/db])".to_owned())
}

/// A pool that connects lazily, so a program can start (and report not ready) while Redis is down.
pub fn pool(url: &str, max_size: u32, timeout: Duration) -> Result<RedisPool, redis::RedisError> {
    let manager = RedisConnectionManager::new(url)?;
    Ok(bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(timeout)
        .build_unchecked(manager))
}

/// Readiness: Redis answers `PING`.
pub struct RedisCheck(pub RedisPool);

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.0.get().await.map_err(|error| error.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
    }
}
