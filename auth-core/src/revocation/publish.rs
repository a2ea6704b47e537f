//! Writing revocations: each one's key and its stream entry, many per round trip.

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::{RedisKeys, Revocation, RevocationKind};

// Revocations per pipeline: large enough that a restore of 100,000 is a hundred round trips,
// small enough that one reply stays a few kilobytes.
const BATCH: usize = 1000;

// A user's instant only moves forward and its key only lives longer: a retried or delayed publish
// of an older revocation must never un-revoke the tokens a later one covers.
const USER_KEY: &str = r"
local before = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]))
if current and current > before then before = current end
local ttl = tonumber(ARGV[2])
local remaining = redis.call('TTL', KEYS[1])
if remaining > ttl then ttl = remaining end
redis.call('SET', KEYS[1], before, 'EX', ttl)
return before";

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

/// Sets each revocation's key (expiring at its `until`) and appends it to the stream, trimming
/// entries older than `retention` (the longest access-token lifetime: older entries revoke only
/// tokens that have expired).
pub async fn publish<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    revocations: &[Revocation],
    retention: Duration,
) -> redis::RedisResult<()> {
    let now = unix_now();
    let min_id = (now - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)).max(0) * 1000;
    for batch in revocations.chunks(BATCH) {
        let mut pipe = redis::pipe();
        for revocation in batch {
            let key = keys.revoked(revocation.kind, &revocation.id);
            let ttl = (revocation.until - now).max(1);
            match (revocation.kind, revocation.before) {
                (RevocationKind::User, Some(before)) => pipe
                    .cmd("EVAL")
                    .arg(USER_KEY)
                    .arg(1)
                    .arg(key)
                    .arg(before)
                    .arg(ttl),
                _ => pipe.cmd("SET").arg(key).arg("1").arg("EX").arg(ttl),
            }
            .ignore();
            let xadd = pipe
                .cmd("XADD")
                .arg(keys.stream())
                .arg("MINID")
                .arg("~")
                .arg(min_id)
                .arg("*");
            for (field, value) in revocation.stream_fields() {
                xadd.arg(field).arg(value);
            }
            xadd.ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
