//! Checking one token against the revocation keys (one round trip).

use redis::aio::ConnectionLike;

use super::{Epoch, RedisKeys, RevocationKind};
use crate::token::VerifiedToken;

/// What the revocation keys say about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupOutcome {
    /// No revocation applies, and Redis holds the complete revocation state.
    Clear,
    /// The first revocation that rejects the token.
    Revoked(RevocationKind),
    /// Redis lost its revocation state (no complete epoch): an absent key proves nothing.
    Unknown,
}

/// The token's `jti`, `sid`, user and `kid` keys and the epoch, read in one round trip. A pipeline
/// of `GET`s rather than one `MGET`: no command names two keys, so the keys may live in different
/// hash slots (Redis Cluster behind a routing endpoint).
pub async fn lookup<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    token: &VerifiedToken,
) -> redis::RedisResult<LookupOutcome> {
    let claims = &token.claims;
    let probes = [
        (RevocationKind::Token, claims.jti.to_string()),
        (RevocationKind::Session, claims.sid.to_string()),
        (RevocationKind::User, claims.sub.to_string()),
        (RevocationKind::Key, token.kid.clone()),
    ];
    let mut pipe = redis::pipe();
    for (kind, id) in &probes {
        pipe.cmd("GET").arg(keys.revoked(*kind, id));
    }
    pipe.cmd("GET").arg(keys.epoch());
    let mut values: Vec<Option<String>> = pipe.query_async(conn).await?;
    let epoch = values.pop().flatten();
    let revoked = probes.iter().zip(values).find_map(|((kind, _), value)| {
        let value = value?;
        let applies = match kind {
            RevocationKind::User => value.parse::<i64>().is_ok_and(|before| claims.iat <= before),
            _ => true,
        };
        applies.then_some(*kind)
    });
    // A key that is present revokes whatever the epoch says; only an absence needs the epoch.
    Ok(match revoked {
        Some(kind) => LookupOutcome::Revoked(kind),
        None if Epoch::parse(epoch.as_deref()).complete().is_some() => LookupOutcome::Clear,
        None => LookupOutcome::Unknown,
    })
}
