//! Ending sessions: this one, one of the user's, or all of them.

use auth_core::revocation::Revocation;
use auth_core::token::VerifiedToken;
use serde_json::json;
use uuid::Uuid;

use crate::error::ApiError;
use crate::service::grants::forget_sessions;
use crate::state::AppState;
use crate::store::audit::{AuditEvent, record};
use crate::store::{ClientInfo, sessions};

/// Revokes the caller's session and this very token.
pub async fn logout(state: &AppState, token: &VerifiedToken, client: &ClientInfo) -> Result<(), ApiError> {
    let claims = &token.claims;
    let revocations = [
        state.revoker.token(claims.jti, claims.exp),
        state.revoker.session(claims.sid),
    ];
    end_sessions(
        state,
        claims.sub,
        Some(claims.sid),
        &revocations,
        "logout",
        client,
    )
    .await?;
    Ok(())
}

/// Revokes every session of the caller and every token issued to them so far.
pub async fn logout_all(
    state: &AppState,
    token: &VerifiedToken,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let user_id = token.claims.sub;
    end_sessions(
        state,
        user_id,
        None,
        &[state.revoker.user(user_id)],
        "logout_all",
        client,
    )
    .await?;
    Ok(())
}

/// Revokes one of the caller's sessions; 404 when it is not theirs or already ended.
pub async fn revoke_session(
    state: &AppState,
    token: &VerifiedToken,
    session_id: Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let revocations = [state.revoker.session(session_id)];
    let ended = end_sessions(
        state,
        token.claims.sub,
        Some(session_id),
        &revocations,
        "session_revoked",
        client,
    )
    .await?;
    if ended.is_empty() {
        Err(ApiError::NotFound)
    } else {
        Ok(())
    }
}

/// Revokes sessions (one, or all with `None`) and records, audits and publishes `revocations`,
/// all committed together before anything is published. Returns the sessions it ended.
pub async fn end_sessions(
    state: &AppState,
    user_id: Uuid,
    session_id: Option<Uuid>,
    revocations: &[Revocation],
    reason: &str,
    client: &ClientInfo,
) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = state.db.begin().await?;
    let ended = match session_id {
        Some(id) => {
            if sessions::revoke(&mut tx, user_id, id, reason).await? {
                vec![id]
            } else {
                Vec::new()
            }
        }
        None => sessions::revoke_all(&mut tx, user_id, reason).await?,
    };
    // A targeted session that is no longer live has had its revocation published already.
    if ended.is_empty() && session_id.is_some() {
        return Ok(ended);
    }
    state.revoker.record(&mut tx, revocations, reason).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: reason,
            user_id: Some(user_id),
            session_id,
            client,
            data: json!({ "sessions": ended.len() }),
        },
    )
    .await?;
    tx.commit().await?;
    state.revoker.publish_or_retry(revocations).await;
    forget_sessions(state, &ended).await;
    Ok(ended)
}
