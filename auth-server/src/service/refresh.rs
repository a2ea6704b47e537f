//! Exchanging a refresh token for a new pair.

use serde_json::json;

use crate::error::ApiError;
use crate::opaque_tokens::OpaqueToken;
use crate::service::grants::{Grant, cache_session, duration, grant_tokens};
use crate::state::AppState;
use crate::store::audit::{AuditEvent, record};
use crate::store::refresh::{Rotation, rotate};
use crate::store::{ClientInfo, users};

/// Rotates `presented` and issues a new access token. A reused token revokes its session.
pub async fn refresh(state: &AppState, presented: &str, client: &ClientInfo) -> Result<Grant, ApiError> {
    state
        .limiter
        .check(
            "refresh",
            &client.rate_limit_key(),
            state.rate_limits.refresh_per_ip,
        )
        .await?;
    let refused = |result: &str| {
        state.metrics.refreshes.with_label_values(&[result]).inc();
        ApiError::BadRefreshToken
    };
    let Some(token) = OpaqueToken::parse(presented) else {
        return Err(refused("invalid"));
    };
    let lifetimes = &state.lifetimes;
    let (session_id, user_id, token, expires_at, result) = match rotate(
        &state.db,
        &token,
        duration(lifetimes.refresh),
        duration(lifetimes.reuse_grace),
        client,
    )
    .await?
    {
        Rotation::Rotated {
            session_id,
            user_id,
            token,
            expires_at,
        } => (session_id, user_id, token, expires_at, "rotated"),
        Rotation::Replayed {
            session_id,
            user_id,
            token,
            expires_at,
        } => (session_id, user_id, token, expires_at, "replayed"),
        Rotation::Reused { session_id, user_id } => {
            revoke_stolen_session(state, session_id, user_id, client).await?;
            return Err(refused("reused"));
        }
        Rotation::Invalid => return Err(refused("invalid")),
    };
    let Some(user) = users::find(&state.db, user_id).await? else {
        return Err(refused("invalid"));
    };
    cache_session(
        state,
        session_id,
        user.id,
        time::OffsetDateTime::now_utc(),
        expires_at,
    )
    .await?;
    state.metrics.refreshes.with_label_values(&[result]).inc();
    grant_tokens(state, user, session_id, token, expires_at, "refresh")
}

/// The session is already revoked in PostgreSQL by the rotation; this records and publishes the
/// revocation of its access tokens and leaves an audit trail.
async fn revoke_stolen_session(
    state: &AppState,
    session_id: uuid::Uuid,
    user_id: uuid::Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    tracing::warn!(%session_id, %user_id, "refresh token reused: session revoked");
    let mut revocations = [state.revoker.session(session_id)];
    let mut tx = state.db.begin().await?;
    state
        .revoker
        .record(&mut tx, &mut revocations, "refresh_token_reuse")
        .await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "refresh_token_reused",
            user_id: Some(user_id),
            session_id: Some(session_id),
            client,
            data: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    state.revoker.publish_or_retry(&revocations).await;
    crate::service::grants::forget_sessions(state, &[session_id]).await;
    Ok(())
}
