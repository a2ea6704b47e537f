//! Checking one token against the revocation keys (one round trip).

use redis::aio::ConnectionLike;

use super::{RedisKeys, RevocationKind};
use crate::token::VerifiedToken;

/// The kind of the first revocation that rejects `token`, if any: one `MGET` of its `jti`, `sid`,
/// user and `kid` keys.
pub async fn lookup<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    token: &VerifiedToken,
) -> redis::RedisResult<Option<RevocationKind>> {
    let claims = &token.claims;
    let probes = [
        (RevocationKind::Token, claims.jti.to_string()),
        (RevocationKind::Session, claims.sid.to_string()),
        (RevocationKind::User, claims.sub.to_string()),
        (RevocationKind::Key, token.kid.clone()),
    ];
    let mut command = redis::cmd("MGET");
    for (kind, id) in &probes {
        command.arg(keys.revoked(*kind, id));
    }
    let values: Vec<Option<String>> = command.query_async(conn).await?;
    Ok(probes.iter().zip(values).find_map(|((kind, _), value)| {
        let value = value?;
        let applies = match kind {
            RevocationKind::User => value.parse::<i64>().is_ok_and(|before| claims.iat <= before),
            _ => true,
        };
        applies.then_some(*kind)
    }))
}
