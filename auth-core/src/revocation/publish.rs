//! Writing a revocation: its key and its stream entry, atomically.

use std::time::Duration;

use redis::aio::ConnectionLike;

use super::{RedisKeys, Revocation};

/// The current unix time in seconds.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
}

/// Sets the revocation's key (expiring at `until`) and appends it to the stream, trimming entries
/// older than `retention` (the longest access-token lifetime: older entries revoke only tokens
/// that have expired).
pub async fn publish<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    revocation: &Revocation,
    retention: Duration,
) -> redis::RedisResult<()> {
    let ttl = (revocation.until - unix_now()).max(1);
    let min_id = (unix_now() - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)).max(0) * 1000;
    let mut xadd = redis::cmd("XADD");
    xadd.arg(keys.stream()).arg("MINID").arg("~").arg(min_id).arg("*");
    for (field, value) in revocation.stream_fields() {
        xadd.arg(field).arg(value);
    }
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(keys.revoked(revocation.kind, &revocation.id))
        .arg(revocation.key_value())
        .arg("EX")
        .arg(ttl)
        .ignore()
        .add_command(xadd)
        .ignore()
        .query_async::<()>(conn)
        .await
}
