//! Getting back in and proving the address: forgot / reset password, verify / resend.
//!
//! The two requests that name an address (forgot-password, resend-verification) do the same
//! work whatever the address: one row in the outbox and one audit row, in one transaction. The
//! outbox worker finds out later whether there is anything to send, so neither the answer nor its
//! timing can tell whether an account exists.

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, FieldError};
use crate::mail::outbox::{self, EMAIL_VERIFICATION, PASSWORD_RESET};
use crate::opaque_tokens::OpaqueToken;
use crate::passwords::check_new_password;
use crate::service::changes::replace_password;
use crate::service::grants::forget_sessions;
use crate::state::AppState;
use crate::store::ClientInfo;
use crate::store::audit::{AuditEvent, record};
use crate::store::single_use::{self, SingleUse};
use crate::store::users;
use crate::validation::{self, Problems};

/// The audit trail names the address by a hash, so a request for a stranger's address leaves no
/// address in the log.
fn address_digest(email: &str) -> String {
    let digest = Sha256::digest(email.to_lowercase().as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

/// Queues a mail of `kind` to `email` (whether or not an account has it), rate limited per
/// client and per address.
async fn request_mail(
    state: &AppState,
    email: &str,
    kind: &str,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    if let Some(problem) = validation::email("email", email) {
        return Err(ApiError::Validation(vec![problem]));
    }
    let email = email.trim();
    let limits = &state.rate_limits;
    state
        .limiter
        .check(
            "mail-request-ip",
            &client.rate_limit_key(),
            limits.mail_requests_per_ip,
        )
        .await?;
    state
        .limiter
        .check(
            &format!("{kind}-address"),
            &email.to_lowercase(),
            limits.mail_requests_per_address,
        )
        .await?;
    let mut tx = state.db.begin().await?;
    outbox::enqueue(&mut *tx, kind, email).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: match kind {
                PASSWORD_RESET => "password_reset_requested",
                _ => "email_verification_requested",
            },
            user_id: None,
            session_id: None,
            client,
            data: json!({ "address": address_digest(email) }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `POST /api/auth/forgot-password`.
pub async fn forgot_password(state: &AppState, email: &str, client: &ClientInfo) -> Result<(), ApiError> {
    request_mail(state, email, PASSWORD_RESET, client).await
}

/// `POST /api/auth/resend-verification`.
pub async fn resend_verification(state: &AppState, email: &str, client: &ClientInfo) -> Result<(), ApiError> {
    request_mail(state, email, EMAIL_VERIFICATION, client).await
}

fn bad_token() -> ApiError {
    ApiError::Validation(vec![FieldError::new("token", "is invalid, used or expired")])
}

/// Sets a new password with a reset token: the address counts as verified, any lock ends, and
/// every session and token of the user is revoked.
pub async fn reset_password(
    state: &AppState,
    token: &str,
    new: &str,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    state
        .limiter
        .check(
            "token-redeem-ip",
            &client.rate_limit_key(),
            state.rate_limits.token_redeems_per_ip,
        )
        .await?;
    let token = OpaqueToken::parse(token).ok_or_else(bad_token)?;
    let hash = token.hash();
    let user = single_use::peek(&state.db, SingleUse::PasswordReset, &hash)
        .await?
        .ok_or_else(bad_token)?;
    let user = users::find(&state.db, user).await?.ok_or_else(bad_token)?;
    let mut problems = Problems::default();
    problems.add(check_new_password("new_password", new, &user.email));
    problems.finish()?;
    let password_hash = state.hasher.hash(new).await?;
    let mut tx = state.db.begin().await?;
    // Used here, under the row lock: of two requests with the same token, one wins.
    if single_use::consume(&mut tx, SingleUse::PasswordReset, &hash).await? != Some(user.id) {
        return Err(bad_token());
    }
    let (ended, revocations) =
        replace_password(state, &mut tx, user.id, &password_hash, "password_reset").await?;
    users::mark_verified(&mut tx, user.id, true).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "password_reset",
            user_id: Some(user.id),
            session_id: None,
            client,
            data: json!({ "sessions_revoked": ended.len() }),
        },
    )
    .await?;
    state.revoker.publish_then_commit(tx, &revocations).await?;
    forget_sessions(state, &ended).await;
    Ok(())
}

/// Marks the address verified with the token mailed to it.
pub async fn verify_email(state: &AppState, token: &str, client: &ClientInfo) -> Result<(), ApiError> {
    state
        .limiter
        .check(
            "token-redeem-ip",
            &client.rate_limit_key(),
            state.rate_limits.token_redeems_per_ip,
        )
        .await?;
    let token = OpaqueToken::parse(token).ok_or_else(bad_token)?;
    let mut tx = state.db.begin().await?;
    let user = single_use::consume(&mut tx, SingleUse::EmailVerification, &token.hash())
        .await?
        .ok_or_else(bad_token)?;
    users::mark_verified(&mut tx, user, false).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "email_verified",
            user_id: Some(user),
            session_id: None,
            client,
            data: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
