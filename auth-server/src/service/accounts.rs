//! Signing up.

use serde_json::json;

use crate::error::ApiError;
use crate::mail::outbox;
use crate::passwords::check_new_password;
use crate::service::grants::{Grant, finish_session, start_session};
use crate::state::AppState;
use crate::store::ClientInfo;
use crate::store::audit::{AuditEvent, record};
use crate::store::users::{self, NewUser};
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
    // The verification mail goes out once this commits.
    outbox::enqueue(&mut *tx, outbox::EMAIL_VERIFICATION, email).await?;
    let user = users::find(&mut *tx, user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a user inserted in this transaction is missing"))?;
    tx.commit().await?;
    finish_session(state, user, session, "register").await
}
