//! The `revoked_tokens` table: the durable copy of every revocation.

use auth_core::revocation::{Revocation, RevocationKind};
use sqlx::{PgConnection, PgPool};

/// Records `revocations`; a repeated one keeps the later instant and expiry. A user revocation
/// repeated within the second of the previous one moves a second past it: tokens issued after
/// the previous one in that second are dated a second later (see `TokenIssuer::issue`), and the
/// new one must cover them. The instants as stored are written back into `revocations`, so what
/// is published is what is durable.
pub async fn record(
    conn: &mut PgConnection,
    revocations: &mut [Revocation],
    reason: &str,
) -> Result<(), sqlx::Error> {
    let kinds: Vec<&str> = revocations.iter().map(|r| r.kind.as_str()).collect();
    let ids: Vec<&str> = revocations.iter().map(|r| r.id.as_str()).collect();
    let befores: Vec<Option<i64>> = revocations.iter().map(|r| r.before).collect();
    let untils: Vec<i64> = revocations.iter().map(|r| r.until).collect();
    let stored: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "INSERT INTO revoked_tokens (kind, value, revoked_before, expires_at, reason) \
         SELECT kind, value, to_timestamp(before), to_timestamp(until), $5 \
         FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS r(kind, value, before, until) \
         ON CONFLICT (kind, value) DO UPDATE SET \
           revoked_before = GREATEST(revoked_tokens.revoked_before + interval '1 second', EXCLUDED.revoked_before), \
           expires_at = GREATEST(revoked_tokens.expires_at, EXCLUDED.expires_at), \
           reason = EXCLUDED.reason \
         RETURNING kind, value, extract(epoch FROM revoked_before)::bigint AS before",
    )
    .bind(&kinds)
    .bind(&ids)
    .bind(&befores)
    .bind(&untils)
    .bind(reason)
    .fetch_all(conn)
    .await?;
    for row in stored {
        if let Some(revocation) = revocations
            .iter_mut()
            .find(|revocation| revocation.kind.as_str() == row.0 && revocation.id == row.1)
        {
            revocation.before = row.2;
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    kind: String,
    value: String,
    before: Option<i64>,
    until: i64,
}

/// Every revocation that still matters.
pub async fn unexpired(pool: &PgPool) -> Result<Vec<Revocation>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT kind, value, extract(epoch FROM revoked_before)::bigint AS before, \
         extract(epoch FROM expires_at)::bigint AS until FROM revoked_tokens WHERE expires_at > now()",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(Revocation {
                kind: RevocationKind::parse(&row.kind)?,
                id: row.value,
                before: row.before,
                until: row.until,
            })
        })
        .collect())
}

/// Whether a durable revocation applies to `token`: the authority when Redis cannot be asked.
pub async fn applies_to(pool: &PgPool, token: &auth_core::token::VerifiedToken) -> Result<bool, sqlx::Error> {
    let claims = &token.claims;
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE expires_at > now() AND ( \
           (kind = 'jti' AND value = $1) OR (kind = 'sid' AND value = $2) OR (kind = 'kid' AND value = $4) \
           OR (kind = 'user' AND value = $3 AND revoked_before >= to_timestamp($5))))",
    )
    .bind(claims.jti.to_string())
    .bind(claims.sid.to_string())
    .bind(claims.sub.to_string())
    .bind(&token.kid)
    .bind(claims.iat)
    .fetch_one(pool)
    .await
}
