//! A compact snapshot of the revocation index, so that a sidecar starting (or every sidecar of a
//! rolling deploy starting at once) reads one value instead of the whole stream. Producing stream
//! entries costs Redis about half a microsecond each, so a fleet restarting with a million
//! revocations on the stream kept Redis busy for minutes; a snapshot is one bulk value Redis copies
//! out, and the stream is read only after its position.
//!
//! `{ns}:revocations:snapshot` holds: a magic, the complete epoch the index was loaded under, the
//! id of the last stream entry it holds, then the index's encoded revocations. A reader uses it
//! only under that same epoch (a restore since then republishes a new stream: the snapshot may
//! miss what the new stream has) and reads the stream after its position; any other snapshot, or
//! none, means reading the whole stream as before. One follower (the auth server's) writes it,
//! at most once an interval, by one replica at a time (a lease key).

use redis::aio::ConnectionLike;

use super::{RedisKeys, RevocationIndex, unix_now};

const MAGIC: &[u8] = b"auth-revocations-1\n";

/// Encodes `index` as loaded under `epoch` up to the stream entry `last_id`.
pub fn encode(index: &RevocationIndex, epoch: &str, last_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 64 + index.len() * 25);
    out.extend_from_slice(MAGIC);
    for field in [epoch, last_id] {
        out.extend_from_slice(field.as_bytes());
        out.push(b'\n');
    }
    index.encode_into(unix_now(), &mut out);
    out
}

/// The epoch, the last stream id and the body of a snapshot; `None` when it is not one.
pub fn parse(bytes: &[u8]) -> Option<(&str, &str, &[u8])> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let mut fields = rest.splitn(3, |byte| *byte == b'\n');
    let epoch = std::str::from_utf8(fields.next()?).ok()?;
    let last_id = std::str::from_utf8(fields.next()?).ok()?;
    Some((epoch, last_id, fields.next()?))
}

/// Applies the stored snapshot to `index` if it was taken under `epoch`; returns the stream id to
/// read on from, or `None` when there is no usable snapshot (nothing applied).
pub async fn restore<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    epoch: &str,
    index: &RevocationIndex,
) -> redis::RedisResult<Option<String>> {
    let stored: Option<Vec<u8>> = redis::cmd("GET").arg(keys.snapshot()).query_async(conn).await?;
    let Some((taken_under, last_id, body)) = stored.as_deref().and_then(parse) else {
        return Ok(None);
    };
    if taken_under != epoch {
        return Ok(None);
    }
    Ok(index.apply_encoded(body).map(|_| last_id.to_owned()))
}

/// Stores a snapshot of `index` unless another writer holds the lease for `every`.
pub async fn store<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    every: std::time::Duration,
    (index, epoch, last_id): (&RevocationIndex, &str, &str),
) -> redis::RedisResult<bool> {
    let claimed: Option<String> = redis::cmd("SET")
        .arg(keys.snapshot_lease())
        .arg("1")
        .arg("NX")
        .arg("PX")
        .arg(u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1))
        .query_async(conn)
        .await?;
    if claimed.is_none() {
        return Ok(false);
    }
    let snapshot = tokio::task::block_in_place(|| encode(index, epoch, last_id));
    let () = redis::cmd("SET")
        .arg(keys.snapshot())
        .arg(snapshot)
        .query_async(conn)
        .await?;
    Ok(true)
}
