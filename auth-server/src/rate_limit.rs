//! Sliding-window rate limits kept in Redis, so every replica counts the same attempts.

use std::str::FromStr;
use std::time::Duration;

use auth_core::redis::RedisPool;
use auth_core::revocation::RedisKeys;
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// At most `max` attempts per `window`; `max == 0` turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Attempts allowed per window.
    pub max: u32,
    /// The window.
    pub window: Duration,
}

impl RateLimit {
    /// `max` attempts per `window`.
    pub const fn per(max: u32, window: Duration) -> Self {
        Self { max, window }
    }

    fn is_off(self) -> bool {
        self.max == 0 || self.window.is_zero()
    }
}

/// Limits are written `attempts/window` (`10/1m`) or `off`.
impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "off" {
            return Ok(Self::per(0, Duration::ZERO));
        }
        let invalid = || format!("expected attempts/window like 10/1m or off, got {text}");
        let (max, window) = text.split_once('/').ok_or_else(invalid)?;
        Ok(Self::per(
            max.trim().parse().map_err(|_| invalid())?,
            humantime::parse_duration(window.trim()).map_err(|_| invalid())?,
        ))
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Counts attempts per scope and identifier.
#[derive(Clone)]
pub struct RateLimiter {
    redis: RedisPool,
    keys: RedisKeys,
    refused: prometheus::IntCounterVec,
}

impl RateLimiter {
    /// A limiter keeping its counters in `redis` under `keys`, counting refusals by scope in
    /// `refused`.
    pub fn new(redis: RedisPool, keys: RedisKeys, refused: prometheus::IntCounterVec) -> Self {
        Self { redis, keys, refused }
    }

    /// Counts one attempt by `id` in `scope`, and refuses it when the estimated count over the
    /// last window exceeds the limit. The estimate weighs the previous fixed window by how much of
    /// it still overlaps the sliding one (two keys per identifier instead of one entry per attempt).
    /// Identifiers are hashed, so no email address or IP lands in Redis key names.
    pub async fn check(&self, scope: &str, id: &str, limit: RateLimit) -> Result<(), ApiError> {
        if limit.is_off() {
            return Ok(());
        }
        let window_ms = u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX).max(1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
            });
        let slot = now_ms / window_ms;
        let elapsed = now_ms % window_ms;
        let digest = Sha256::digest(id.as_bytes());
        let base = self.keys.rate_limit(scope, &hex(&digest[..12]));
        let mut conn = self.redis.get().await?;
        let (current, previous): (u64, Option<u64>) = redis::pipe()
            .atomic()
            .incr(format!("{base}:{slot}"), 1)
            .pexpire(
                format!("{base}:{slot}"),
                i64::try_from(window_ms * 2).unwrap_or(i64::MAX),
            )
            .ignore()
            .get(format!("{base}:{}", slot.saturating_sub(1)))
            .query_async(&mut *conn)
            .await?;
        #[allow(clippy::cast_precision_loss)]
        let overlap = 1.0 - elapsed as f64 / window_ms as f64;
        #[allow(clippy::cast_precision_loss)]
        let estimate = previous.unwrap_or(0) as f64 * overlap + current as f64;
        if estimate > f64::from(limit.max) {
            let retry_after = (window_ms - elapsed).div_ceil(1000).max(1);
            self.refused.with_label_values(&[scope]).inc();
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RateLimit, serde_json::Error> {
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
    }

    #[test]
    fn limits_parse_from_attempts_per_window() {
        assert_eq!(
            parse("10/1m").unwrap(),
            RateLimit::per(10, Duration::from_secs(60))
        );
        assert_eq!(
            parse(" 5 / 30s ").unwrap(),
            RateLimit::per(5, Duration::from_secs(30))
        );
        assert!(parse("off").unwrap().is_off());
        assert!(parse("10 per minute").is_err());
        assert!(parse("x/1m").is_err());
    }
}
