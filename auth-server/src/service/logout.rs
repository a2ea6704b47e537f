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
    let this_token = state.revoker.token(claims.jti, claims.exp);
    end_sessions(
        state,
        claims.sub,
        Some(claims.sid),
        Some(this_token),
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
    end_sessions(state, token.claims.sub, None, None, "logout_all", client).await?;
    Ok(())
}

/// Revokes one of the caller's sessions; 404 when it is not theirs or already ended.
pub async fn revoke_session(
    state: &AppState,
    token: &VerifiedToken,
    session_id: Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let ended = end_sessions(
        state,
        token.claims.sub,
        Some(session_id),
        None,
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

/// Ends sessions (one, or all of the user's with `None`), and records, audits and publishes their
/// revocations — one session's, or the user's and every ended session's — plus `also`, all
/// committed together before anything is published. Returns the sessions it ended.
pub async fn end_sessions(
    state: &AppState,
    user_id: Uuid,
    session_id: Option<Uuid>,
    also: Option<Revocation>,
    reason: &str,
    client: &ClientInfo,
) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = state.db.begin().await?;
    let (ended, ended_revocations) = match session_id {
        Some(id) => {
            if !sessions::revoke(&mut tx, user_id, id, reason).await? {
                // No longer live: its revocation was published already.
                return Ok(Vec::new());
            }
            (vec![id], vec![state.revoker.session(id)])
        }
        None => {
            let ended = sessions::revoke_all(&mut tx, user_id, reason).await?;
            let revocations = state.revoker.user_and_sessions(user_id, &ended);
            (ended, revocations)
        }
    };
    let mut revocations: Vec<Revocation> = also.into_iter().chain(ended_revocations).collect();
    state.revoker.record(&mut tx, &mut revocations, reason).await?;
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
    state.revoker.publish_then_commit(tx, &revocations).await?;
    forget_sessions(state, &ended).await;
    Ok(ended)
}
