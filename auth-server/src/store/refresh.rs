//! Refresh-token rotation with reuse detection, in one transaction per refresh.

use sqlx::{Acquire, PgPool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::opaque_tokens::OpaqueToken;

/// What presenting a refresh token led to.
pub enum Rotation {
    /// The token was current: it is now rotated and `token` is its child.
    Rotated {
        /// The session.
        session_id: Uuid,
        /// Its user.
        user_id: Uuid,
        /// The new refresh token.
        token: OpaqueToken,
        /// When the new token (and the session, unless refreshed again) expires.
        expires_at: OffsetDateTime,
    },
    /// The token was rotated moments ago and its child is still current: a retry (two tabs, a
    /// lost response) gets the same child back instead of forking the session.
    Replayed {
        /// The session.
        session_id: Uuid,
        /// Its user.
        user_id: Uuid,
        /// The child handed out the first time.
        token: OpaqueToken,
        /// When it expires.
        expires_at: OffsetDateTime,
    },
    /// An already-rotated token was presented outside the grace window: it was stolen, or the
    /// client is broken. The whole session is now revoked.
    Reused {
        /// The revoked session.
        session_id: Uuid,
        /// Its user.
        user_id: Uuid,
    },
    /// Unknown, expired or revoked.
    Invalid,
}

#[derive(sqlx::FromRow)]
struct Presented {
    id: Uuid,
    session_id: Uuid,
    user_id: Uuid,
    rotated_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
    sealed_child: Option<Vec<u8>>,
    session_revoked_at: Option<OffsetDateTime>,
    session_expires_at: OffsetDateTime,
    absolute_expires_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct Child {
    rotated_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
    expires_at: OffsetDateTime,
}

/// Rotates `presented`. Rows are locked (token, then session), so concurrent refreshes of one
/// session are serialised and a token never gets two children.
pub async fn rotate(
    pool: &PgPool,
    presented: &OpaqueToken,
    ttl: Duration,
    grace: Duration,
    client: &super::ClientInfo,
) -> Result<Rotation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let conn = tx.acquire().await?;
    let found: Option<Presented> = sqlx::query_as(
        "SELECT rt.id, rt.session_id, s.user_id, rt.rotated_at, rt.revoked_at, rt.expires_at, \
         rt.sealed_child, s.revoked_at AS session_revoked_at, s.expires_at AS session_expires_at, \
         s.absolute_expires_at \
         FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
         WHERE rt.token_hash = $1 FOR UPDATE OF rt, s",
    )
    .bind(presented.hash())
    .fetch_optional(&mut *conn)
    .await?;
    let now = OffsetDateTime::now_utc();
    let Some(row) = found else {
        return Ok(Rotation::Invalid);
    };
    if row.revoked_at.is_some()
        || row.session_revoked_at.is_some()
        || row.expires_at <= now
        || row.session_expires_at <= now
        || row.absolute_expires_at <= now
    {
        return Ok(Rotation::Invalid);
    }

    let Some(rotated_at) = row.rotated_at else {
        let child = OpaqueToken::generate().map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
        let expires_at = (now + ttl).min(row.absolute_expires_at);
        sqlx::query(
            "INSERT INTO refresh_tokens (session_id, parent_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(row.session_id)
        .bind(row.id)
        .bind(child.hash())
        .bind(expires_at)
        .execute(&mut *conn)
        .await?;
        sqlx::query("UPDATE refresh_tokens SET rotated_at = $2, sealed_child = $3 WHERE id = $1")
            .bind(row.id)
            .bind(now)
            .bind(presented.seal(&child))
            .execute(&mut *conn)
            .await?;
        sqlx::query("UPDATE sessions SET last_used_at = $2, expires_at = $3 WHERE id = $1")
            .bind(row.session_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
        super::audit::record(
            &mut *conn,
            super::audit::AuditEvent {
                event_type: "token_refreshed",
                user_id: Some(row.user_id),
                session_id: Some(row.session_id),
                client,
                data: serde_json::json!({}),
            },
        )
        .await?;
        tx.commit().await?;
        return Ok(Rotation::Rotated {
            session_id: row.session_id,
            user_id: row.user_id,
            token: child,
            expires_at,
        });
    };

    let child: Option<Child> = sqlx::query_as(
        "SELECT rotated_at, revoked_at, expires_at FROM refresh_tokens WHERE parent_id = $1 FOR UPDATE",
    )
    .bind(row.id)
    .fetch_optional(&mut *conn)
    .await?;
    let replay = child
        .filter(|child| now - rotated_at <= grace && child.rotated_at.is_none() && child.revoked_at.is_none())
        .zip(
            row.sealed_child
                .as_deref()
                .and_then(|sealed| presented.unseal(sealed)),
        );
    if let Some((child, token)) = replay {
        tx.commit().await?;
        return Ok(Rotation::Replayed {
            session_id: row.session_id,
            user_id: row.user_id,
            token,
            expires_at: child.expires_at,
        });
    }

    sqlx::query(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = 'refresh_token_reuse' \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(row.session_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE session_id = $1 AND revoked_at IS NULL")
        .bind(row.session_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    tx.commit().await?;
    Ok(Rotation::Reused {
        session_id: row.session_id,
        user_id: row.user_id,
    })
}
