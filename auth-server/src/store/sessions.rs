//! The `sessions` table (and the first refresh token of each session).

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::ClientInfo;

/// A session as listed to its user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Session {
    /// The session id (the `sid` claim).
    pub id: Uuid,
    /// The address it was created from.
    pub ip: Option<String>,
    /// The user agent it was created from.
    pub user_agent: Option<String>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last refreshed.
    pub last_used_at: OffsetDateTime,
    /// Expires unless refreshed.
    pub expires_at: OffsetDateTime,
}

/// Creates a session whose first refresh token has hash `token_hash`.
pub async fn create(
    conn: &mut PgConnection,
    user_id: Uuid,
    client: &ClientInfo,
    token_hash: &[u8],
    expires_at: OffsetDateTime,
    absolute_expires_at: OffsetDateTime,
) -> Result<Session, sqlx::Error> {
    let session: Session = sqlx::query_as(
        "INSERT INTO sessions (user_id, ip, user_agent, expires_at, absolute_expires_at) \
         VALUES ($1, $2::inet, $3, $4, $5) \
         RETURNING id, host(ip) AS ip, user_agent, created_at, last_used_at, expires_at",
    )
    .bind(user_id)
    .bind(client.ip_text())
    .bind(client.user_agent.as_deref())
    .bind(expires_at)
    .bind(absolute_expires_at)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO refresh_tokens (session_id, token_hash, expires_at) VALUES ($1, $2, $3)")
        .bind(session.id)
        .bind(token_hash)
        .bind(expires_at)
        .execute(conn)
        .await?;
    Ok(session)
}

/// The user's live sessions, newest first.
pub async fn list_active(pool: &PgPool, user_id: Uuid) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, host(ip) AS ip, user_agent, created_at, last_used_at, expires_at FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() ORDER BY created_at DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
}

/// Revokes one of the user's sessions and its refresh tokens; `false` if it is not the user's or
/// is already revoked.
pub async fn revoke(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let revoked = revoke_where(conn, user_id, Some(session_id), reason).await?;
    Ok(!revoked.is_empty())
}

/// Revokes every live session of the user and their refresh tokens; returns their ids.
pub async fn revoke_all(
    conn: &mut PgConnection,
    user_id: Uuid,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    revoke_where(conn, user_id, None, reason).await
}

/// Revokes the user's live sessions (all of them, or just `session_id`) and their refresh tokens.
async fn revoke_where(
    conn: &mut PgConnection,
    user_id: Uuid,
    session_id: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
         WHERE user_id = $1 AND ($2::uuid IS NULL OR id = $2) AND revoked_at IS NULL RETURNING id",
    )
    .bind(user_id)
    .bind(session_id)
    .bind(reason)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE session_id = ANY($1) AND revoked_at IS NULL",
    )
    .bind(&ids)
    .execute(conn)
    .await?;
    Ok(ids)
}
