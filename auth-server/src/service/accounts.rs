//! Signing up and logging in.

use serde_json::json;

use crate::error::ApiError;
use crate::passwords::check_new_password;
use crate::service::grants::{Grant, finish_session, start_session};
use crate::state::AppState;
use crate::store::ClientInfo;
use crate::store::audit::{AuditEvent, record};
use crate::store::users::{self, NewUser, User};
use crate::validation::{self, Problems};

/// What a new account is made of.
pub struct Registration<'a> {
    /// Email address.
    pub email: &'a str,
    /// Password.
    pub password: &'a str,
    /// Optional username.
    pub username: Option<&'a str>,
    /// Optional given name.
    pub first_name: Option<&'a str>,
    /// Optional family name.
    pub last_name: Option<&'a str>,
}

/// Creates an account and its first session.
pub async fn register(
    state: &AppState,
    new: Registration<'_>,
    client: &ClientInfo,
) -> Result<Grant, ApiError> {
    state
        .limiter
        .check(
            "register",
            &client.rate_limit_key(),
            state.rate_limits.register_per_ip,
        )
        .await?;
    let email = new.email.trim();
    let mut problems = Problems::default();
    problems.add(validation::email("email", email));
    problems.add(check_new_password("password", new.password, email));
    problems.add(
        new.username
            .and_then(|value| validation::username("username", value)),
    );
    problems.add(
        new.first_name
            .and_then(|value| validation::name("first_name", value)),
    );
    problems.add(
        new.last_name
            .and_then(|value| validation::name("last_name", value)),
    );
    problems.finish()?;

    let password_hash = state.hasher.hash(new.password).await?;
    let mut tx = state.db.begin().await?;
    let user_id = users::insert(
        &mut tx,
        &NewUser {
            email,
            username: new.username,
            password_hash: &password_hash,
            first_name: new.first_name,
            last_name: new.last_name,
        },
    )
    .await?;
    let session = start_session(state, &mut tx, user_id, client).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "user_registered",
            user_id: Some(user_id),
            session_id: None,
            client,
            data: json!({}),
        },
    )
    .await?;
    let user = users::find(&mut *tx, user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a user inserted in this transaction is missing"))?;
    tx.commit().await?;
    finish_session(state, user, session, "register").await
}

/// Who is logging in: an email address or a username.
pub enum LoginName<'a> {
    /// By email.
    Email(&'a str),
    /// By username.
    Username(&'a str),
}

/// Checks a password and starts a session. Every failure is the same 401, and an unknown account
/// costs the same bcrypt work as a wrong password.
pub async fn login(
    state: &AppState,
    name: LoginName<'_>,
    password: &str,
    client: &ClientInfo,
) -> Result<Grant, ApiError> {
    let account_key = match name {
        LoginName::Email(email) => email.trim().to_lowercase(),
        LoginName::Username(username) => username.trim().to_lowercase(),
    };
    let limits = async {
        state
            .limiter
            .check("login", &client.rate_limit_key(), state.rate_limits.login_per_ip)
            .await?;
        state
            .limiter
            .check("login-account", &account_key, state.rate_limits.login_per_account)
            .await
    };
    if let Err(error) = limits.await {
        if matches!(error, ApiError::RateLimited { .. }) {
            state.metrics.logins.with_label_values(&["rate_limited"]).inc();
        }
        return Err(error);
    }
    let user = match name {
        LoginName::Email(email) => users::find_by_email(&state.db, email.trim()).await?,
        LoginName::Username(username) => users::find_by_username(&state.db, username.trim()).await?,
    };
    let matched = state
        .hasher
        .verify(password, user.as_ref().map(|user| user.password_hash.as_str()))
        .await?;
    let user = match user {
        Some(user) if matched && !user.is_locked() => user,
        other => return Err(refuse(state, other.as_ref(), client).await),
    };
    users::record_login(&state.db, user.id, true).await?;
    upgrade_hash_if_weaker(state, &user, password).await;
    let mut tx = state.db.begin().await?;
    let session = start_session(state, &mut tx, user.id, client).await?;
    record(
        &mut *tx,
        AuditEvent {
            event_type: "login_succeeded",
            user_id: Some(user.id),
            session_id: None,
            client,
            data: json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    state.metrics.logins.with_label_values(&["success"]).inc();
    finish_session(state, user, session, "login").await
}

/// Counts and audits a failed login; always ends in the same generic 401.
async fn refuse(state: &AppState, user: Option<&User>, client: &ClientInfo) -> ApiError {
    state
        .metrics
        .logins
        .with_label_values(&["invalid_credentials"])
        .inc();
    let reason = match user {
        None => "unknown_account",
        Some(user) if user.is_locked() => "locked",
        Some(_) => "wrong_password",
    };
    let user_id = user.map(|user| user.id);
    let recorded = async {
        if let Some(id) = user_id {
            users::record_login(&state.db, id, false).await?;
        }
        record(
            &state.db,
            AuditEvent {
                event_type: "login_failed",
                user_id,
                session_id: None,
                client,
                data: json!({ "reason": reason }),
            },
        )
        .await
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
