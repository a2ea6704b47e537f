//! Starting sessions and handing out token pairs.

use auth_core::revocation::unix_now;
use serde_json::json;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::access_tokens::{Identity, IssuedToken};
use crate::error::ApiError;
use crate::opaque_tokens::OpaqueToken;
use crate::state::AppState;
use crate::store::ClientInfo;
use crate::store::sessions;
use crate::store::users::User;

/// Everything a client receives when it gets (new) tokens.
pub struct Grant {
    /// The account.
    pub user: User,
    /// The session.
    pub session_id: Uuid,
    /// The access token.
    pub access: IssuedToken,
    /// The refresh token.
    pub refresh: OpaqueToken,
    /// When the refresh token (and the session, unless refreshed) expires.
    pub refresh_expires_at: OffsetDateTime,
}

/// A configured lifetime as a `time` span, for arithmetic with timestamps.
pub(crate) fn duration(std: std::time::Duration) -> time::Duration {
    time::Duration::try_from(std).unwrap_or(time::Duration::MAX)
}

/// A session started inside the caller's transaction, waiting for its tokens.
pub struct NewSession {
    session_id: Uuid,
    created_at: OffsetDateTime,
    refresh: OpaqueToken,
    refresh_expires_at: OffsetDateTime,
}

/// Creates a session for `user_id` with its first refresh token.
pub async fn start_session(
    state: &AppState,
    conn: &mut PgConnection,
    user_id: Uuid,
    client: &ClientInfo,
) -> Result<NewSession, ApiError> {
    let refresh = OpaqueToken::generate()?;
    let now = OffsetDateTime::now_utc();
    let absolute = now + duration(state.lifetimes.session_max);
    let expires_at = (now + duration(state.lifetimes.refresh)).min(absolute);
    let session = sessions::create(conn, user_id, client, &refresh.hash(), expires_at, absolute).await?;
    Ok(NewSession {
        session_id: session.id,
        created_at: session.created_at,
        refresh,
        refresh_expires_at: expires_at,
    })
}

/// Mirrors a committed session into Redis and issues its access token.
pub async fn finish_session(
    state: &AppState,
    user: User,
    session: NewSession,
    grant: &str,
) -> Result<Grant, ApiError> {
    cache_session(
        state,
        session.session_id,
        user.id,
        session.created_at,
        session.refresh_expires_at,
    )
    .await?;
    grant_tokens(
        state,
        user,
        session.session_id,
        session.refresh,
        session.refresh_expires_at,
        grant,
    )
}

/// Issues an access token next to `refresh` for the session.
pub fn grant_tokens(
    state: &AppState,
    user: User,
    session_id: Uuid,
    refresh: OpaqueToken,
    refresh_expires_at: OffsetDateTime,
    grant: &str,
) -> Result<Grant, ApiError> {
    let identity = Identity {
        user_id: user.id,
        email: user.email.clone(),
        email_verified: user.email_verified,
        roles: user.roles.clone(),
        revoked_before: user.revoked_before,
    };
    let access = state.issuer.issue(&identity, session_id)?;
    state.metrics.tokens_issued.with_label_values(&[grant]).inc();
    Ok(Grant {
        user,
        session_id,
        access,
        refresh,
        refresh_expires_at,
    })
}

/// `auth:session:{sid}` with the session's owner and expiry, for the session's cache lifetime.
pub async fn cache_session(
    state: &AppState,
    session_id: Uuid,
    user_id: Uuid,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<(), ApiError> {
    let remaining = (expires_at.unix_timestamp() - unix_now()).max(1);
    let ttl = remaining.min(i64::try_from(state.lifetimes.session_cache.as_secs()).unwrap_or(i64::MAX));
    let value = json!({
        "user_id": user_id,
        "expires_at": expires_at.unix_timestamp(),
        "created_at": created_at.unix_timestamp(),
    });
    let mut conn = state.redis.get().await?;
    redis::cmd("SET")
        .arg(state.redis_keys.session(session_id))
        .arg(value.to_string())
        .arg("EX")
        .arg(ttl)
        .query_async::<()>(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes the Redis mirrors of ended sessions. Best effort: the sessions are revoked in
/// PostgreSQL already, and a mirror left behind by a Redis outage expires with its TTL.
pub async fn forget_sessions(state: &AppState, session_ids: &[Uuid]) {
    if session_ids.is_empty() {
        return;
    }
    let keys: Vec<String> = session_ids
        .iter()
        .map(|id| state.redis_keys.session(*id))
        .collect();
    let deleted = async {
        let mut conn = state.redis.get().await.map_err(|error| error.to_string())?;
        redis::cmd("DEL")
            .arg(keys)
            .query_async::<()>(&mut *conn)
            .await
            .map_err(|error| error.to_string())
    };
    if let Err(error) = deleted.await {
        tracing::warn!(error, "cannot delete session mirrors; they will expire");
    }
}
