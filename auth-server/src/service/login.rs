//! Logging in: limits and a lockout that strangers cannot turn against the owner, the password
//! check, and a session only if the account is still what was checked.
//!
//! Failures from anywhere count towards the account's lockout, but the per-account limit and the
//! lockout hold back only logins from unknown sources: a device that logged in to the account
//! before (it presents its device token) or an address block it logged in from within
//! `AUTH_KNOWN_SOURCE_WINDOW` passes, limited only per address. From an unknown source the correct
//! password works again once the lock runs out, and failures during a lock do not extend it.

use serde_json::json;
use uuid::Uuid;

use crate::error::ApiError;
use crate::mail::outbox;
use crate::opaque_tokens::OpaqueToken;
use crate::service::grants::{Grant, finish_session, start_session};
use crate::state::AppState;
use crate::store::audit::{AuditEvent, record};
use crate::store::users::{self, User};
use crate::store::{ClientInfo, known_sources};

/// Who is logging in: an email address or a username.
pub enum LoginName<'a> {
    /// By email.
    Email(&'a str),
    /// By username.
    Username(&'a str),
}

/// A successful login.
pub struct LoggedIn {
    /// The tokens.
    pub grant: Grant,
    /// A new device token, when the client presented none valid for this account.
    pub device_token: Option<String>,
}

/// Counts `error` in the login metrics when it is a rate limit.
fn limited(state: &AppState, outcome: Result<(), ApiError>) -> Result<(), ApiError> {
    if matches!(outcome, Err(ApiError::RateLimited { .. })) {
        state.metrics.logins.with_label_values(&["rate_limited"]).inc();
    }
    outcome
}

/// Checks a password and starts a session. Every failure is the same 401, and an unknown account
/// costs the same bcrypt work as a wrong password.
pub async fn login(
    state: &AppState,
    name: LoginName<'_>,
    password: &str,
    device_token: Option<&str>,
    client: &ClientInfo,
) -> Result<LoggedIn, ApiError> {
    let per_ip = state.rate_limits.login_per_ip;
    limited(
        state,
        state
            .limiter
            .check("login", &client.rate_limit_key(), per_ip)
            .await,
    )?;
    let user = match name {
        LoginName::Email(email) => users::find_by_email(&state.db, email.trim()).await?,
        LoginName::Username(username) => users::find_by_username(&state.db, username.trim()).await?,
    };
    let device = device_token
        .and_then(OpaqueToken::parse)
        .map(|token| token.hash());
    // Asked for unknown accounts too, so both cost the same queries.
    let known = known_sources::is_known(
        &state.db,
        user.as_ref().map_or(Uuid::nil(), |user| user.id),
        client,
        device.as_deref(),
        state.known_source_window,
    )
    .await?;
    if !known {
        // Keyed on the account found: no spelling of its name gets a bucket of its own.
        let account = match (&user, name) {
            (Some(user), _) => user.id.to_string(),
            (None, LoginName::Email(id) | LoginName::Username(id)) => id.trim().to_lowercase(),
        };
        let per_account = state.rate_limits.login_per_account;
        limited(
            state,
            state.limiter.check("login-account", &account, per_account).await,
        )?;
    }
    let matched = state
        .hasher
        .verify(password, user.as_ref().map(|user| user.password_hash.as_str()))
        .await?;
    let user = match user {
        Some(user) if matched && (known || !user.is_locked()) && !user.is_disabled() => user,
        None => return Err(refuse(state, None, "unknown_account", client).await),
        Some(user) if matched => return Err(refuse(state, Some(user.id), "locked", client).await),
        Some(user) => return Err(refuse(state, Some(user.id), "wrong_password", client).await),
    };
    if state.require_verified_email && !user.email_verified {
        // Said only after the right password: it tells nothing a stranger could not guess.
        return Err(ApiError::EmailNotVerified);
    }
    let mut tx = state.db.begin().await?;
    // A password change, deletion or lock that committed since the account was read wins.
    let still = users::lock_for_login(&mut tx, user.id).await?;
    if !still
        .is_some_and(|(hash, locked, disabled)| hash == user.password_hash && (known || !locked) && !disabled)
    {
        drop(tx);
        return Err(refuse(state, Some(user.id), "changed_during_login", client).await);
    }
    users::record_success(&mut tx, user.id).await?;
    let session = start_session(state, &mut tx, user.id, client).await?;
    let new_device = match device {
        Some(hash) if known => {
            known_sources::remember(&mut tx, user.id, &hash).await?;
            None
        }
        _ => {
            let token = OpaqueToken::generate()?;
            known_sources::remember(&mut tx, user.id, &token.hash()).await?;
            Some(token.encode())
        }
    };
    record(
        &mut *tx,
        AuditEvent {
            event_type: "login_succeeded",
            user_id: Some(user.id),
            session_id: None,
            client,
            data: json!({ "known_source": known }),
        },
    )
    .await?;
    tx.commit().await?;
    state.metrics.logins.with_label_values(&["success"]).inc();
    upgrade_hash_if_weaker(state, &user, password).await;
    Ok(LoggedIn {
        grant: finish_session(state, user, session, "login").await?,
        device_token: new_device,
    })
}

/// Audits a failed login (a wrong password also counts towards the lockout, in the same
/// transaction); always ends in the same generic 401.
async fn refuse(state: &AppState, user_id: Option<Uuid>, reason: &str, client: &ClientInfo) -> ApiError {
    state
        .metrics
        .logins
        .with_label_values(&["invalid_credentials"])
        .inc();
    let recorded = async {
        let mut tx = state.db.begin().await?;
        let locked = match user_id {
            Some(id) if reason == "wrong_password" => {
                users::record_failure(&mut tx, id, state.lockout).await?
            }
            _ => false,
        };
        if let (true, Some(id)) = (locked, user_id) {
            outbox::enqueue_notice(&mut tx, outbox::ACCOUNT_LOCKED, id).await?;
        }
        let events = [("login_failed", true), ("account_locked", locked)];
        for (event_type, happened) in events {
            if happened {
                let event = AuditEvent {
                    event_type,
                    user_id,
                    session_id: None,
                    client,
                    data: json!({ "reason": reason }),
                };
                record(&mut *tx, event).await?;
            }
        }
        tx.commit().await
    };
    match recorded.await {
        Ok(()) => ApiError::BadCredentials,
        Err(error) => error.into(),
    }
}

/// Re-hashes a password stored at a lower cost than configured, now that we have it in hand.
async fn upgrade_hash_if_weaker(state: &AppState, user: &User, password: &str) {
    let stored_cost = user
        .password_hash
        .get(4..6)
        .and_then(|cost| cost.parse::<u32>().ok());
    if stored_cost.is_none_or(|cost| cost >= state.hasher.cost()) {
        return;
    }
    let upgraded = async {
        let hash = state.hasher.hash(password).await?;
        users::upgrade_hash(&state.db, user.id, &user.password_hash, &hash).await?;
        Ok::<_, ApiError>(())
    };
    if let Err(error) = upgraded.await {
        tracing::warn!(error = %error, "could not upgrade a password hash");
    }
}
