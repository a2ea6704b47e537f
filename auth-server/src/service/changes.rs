//! Changing what an account is: its password, its profile, its existence.

use auth_core::token::VerifiedToken;
use serde_json::json;

use crate::error::{ApiError, FieldError};
use crate::passwords::check_new_password;
use crate::service::grants::{Grant, finish_session, forget_sessions, start_session};
use crate::state::AppState;
use crate::store::audit::{AuditEvent, record};
use crate::store::users::{self, ProfileChanges, User};
use crate::store::{ClientInfo, sessions};
use crate::validation::{self, Problems};

/// The caller's account; a valid token whose account is gone counts as invalid.
pub async fn current_user(state: &AppState, token: &VerifiedToken) -> Result<User, ApiError> {
    users::find(&state.db, token.claims.sub)
        .await?
        .ok_or(ApiError::BadToken)
}

/// Checks the account's password, at most `password_check_per_user` times per window: a stolen
/// access token must not become a guessing oracle.
async fn confirm_password(
    state: &AppState,
    user: &User,
    field: &str,
    password: &str,
) -> Result<(), ApiError> {
    let limit = state.rate_limits.password_check_per_user;
    state
        .limiter
        .check("password-check", &user.id.to_string(), limit)
        .await?;
    if state.hasher.verify(password, Some(&user.password_hash)).await? {
        Ok(())
    } else {
        Err(ApiError::Validation(vec![FieldError::new(
            field,
            "does not match the current password",
        )]))
    }
}

/// Sets a new password, revokes every session and token of the user (every device must log in
/// again), and starts a fresh session for the caller so they stay logged in here.
pub async fn change_password(
    state: &AppState,
    token: &VerifiedToken,
    current: &str,
    new: &str,
    client: &ClientInfo,
) -> Result<Grant, ApiError> {
    let user = current_user(state, token).await?;
    let mut problems = Problems::default();
    problems.add(check_new_password("new_password", new, &user.email));
    if current == new {
        problems.add(Some(FieldError::new(
            "new_password",
            "must differ from the current password",
        )));
    }
    problems.finish()?;
    confirm_password(state, &user, "current_password", current).await?;
    let hash = state.hasher.hash(new).await?;
    let mut tx = state.db.begin().await?;
    let (ended, revocations) = replace_password(state, &mut tx, user.id, &hash, "password_changed").await?;
    let session = start_session(state, &mut tx, user.id, client).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "password_changed",
            user_id: Some(user.id),
            session_id: Some(token.claims.sid),
            client,
            data: json!({ "sessions_revoked": ended.len() }),
        },
    )
    .await?;
    let user = users::find(&mut *tx, user.id).await?.ok_or(ApiError::BadToken)?;
    state.revoker.publish_then_commit(tx, &revocations).await?;
    forget_sessions(state, &ended).await;
    finish_session(state, user, session, "password_change").await
}

/// Sets a new password hash and revokes every session and token of the user, in the caller's
/// transaction; returns the sessions ended and the revocations to publish once it commits.
pub async fn replace_password(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    user_id: uuid::Uuid,
    hash: &str,
    reason: &str,
) -> Result<(Vec<uuid::Uuid>, Vec<auth_core::revocation::Revocation>), ApiError> {
    users::set_password(tx, user_id, hash).await?;
    let ended = sessions::revoke_all(tx, user_id, reason).await?;
    let mut revocations = state.revoker.user_and_sessions(user_id, &ended);
    state.revoker.record(tx, &mut revocations, reason).await?;
    Ok((ended, revocations))
}

/// Soft-deletes the account after checking its password; every session and token is revoked.
pub async fn delete_account(
    state: &AppState,
    token: &VerifiedToken,
    password: &str,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let user = current_user(state, token).await?;
    confirm_password(state, &user, "password", password).await?;
    let mut tx = state.db.begin().await?;
    users::soft_delete(&mut tx, user.id).await?;
    let ended = sessions::revoke_all(&mut tx, user.id, "account_deleted").await?;
    let mut revocations = state.revoker.user_and_sessions(user.id, &ended);
    state
        .revoker
        .record(&mut tx, &mut revocations, "account_deleted")
        .await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "account_deleted",
            user_id: Some(user.id),
            session_id: Some(token.claims.sid),
            client,
            data: json!({ "sessions_revoked": ended.len() }),
        },
    )
    .await?;
    state.revoker.publish_then_commit(tx, &revocations).await?;
    forget_sessions(state, &ended).await;
    Ok(())
}

/// Validates and applies profile changes.
pub async fn update_profile(
    state: &AppState,
    token: &VerifiedToken,
    changes: ProfileChanges,
) -> Result<User, ApiError> {
    let mut problems = Problems::default();
    if let Some(Some(username)) = &changes.username {
        problems.add(validation::username("username", username));
    }
    if let Some(Some(first_name)) = &changes.first_name {
        problems.add(validation::name("first_name", first_name));
    }
    if let Some(Some(last_name)) = &changes.last_name {
        problems.add(validation::name("last_name", last_name));
    }
    if let Some(profile) = &changes.profile {
        problems.add(validation::profile("profile", profile));
    }
    problems.finish()?;
    users::update_profile(&state.db, token.claims.sub, changes)
        .await?
        .ok_or(ApiError::BadToken)
}
