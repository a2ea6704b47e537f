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

/// What registering did.
pub enum Registered {
    /// The account exists and is logged in.
    Granted(Box<Grant>),
    /// Enumeration-safe mode: the same answer whether the address was new (the account exists,
    /// not logged in) or taken (its owner was told someone tried).
    Accepted,
}

/// Creates an account and (unless registration is enumeration-safe) its first session.
pub async fn register(
    state: &AppState,
    new: Registration<'_>,
    client: &ClientInfo,
) -> Result<Registered, ApiError> {
    state
        .limiter
        .check(
            "register",
            &client.rate_limit_key(),
            state.rate_limits.register_per_ip,
        )
        .await?;
    let mut problems = Problems::default();
    problems.add(validation::email("email", new.email));
    let email = new.email.trim();
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

    // Hashed before the address is looked at, so a taken address costs the same.
    let password_hash = state.hasher.hash(new.password).await?;
    let mut tx = state.db.begin().await?;
    let inserted = users::insert(
        &mut tx,
        &NewUser {
            email,
            username: new.username,
            password_hash: &password_hash,
            first_name: new.first_name,
            last_name: new.last_name,
        },
    )
    .await
    .map_err(ApiError::from);
    let user_id = match inserted {
        Ok(id) => id,
        Err(ApiError::Conflict { field: "email", .. }) if state.enumeration_safe_registration => {
            drop(tx);
            tell_owner(state, email, client).await?;
            return Ok(Registered::Accepted);
        }
        Err(error) => return Err(error),
    };
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
    // Without a session when the address must be verified before a login.
    if state.enumeration_safe_registration || state.require_verified_email {
        tx.commit().await?;
        return Ok(Registered::Accepted);
    }
    let session = start_session(state, &mut tx, user_id, client).await?;
    let user = users::find(&mut *tx, user_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("a user inserted in this transaction is missing"))?;
    tx.commit().await?;
    finish_session(state, user, session, "register")
        .await
        .map(|grant| Registered::Granted(Box::new(grant)))
}

/// Someone tried to register an address that has an account: its owner gets a notice (at most
/// one an hour), and the attempt is audited.
async fn tell_owner(state: &AppState, email: &str, client: &ClientInfo) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let owner: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
    if let Some(owner) = owner {
        outbox::enqueue_notice(&mut tx, outbox::REGISTRATION_ATTEMPT, owner).await?;
        record(
            &mut *tx,
            AuditEvent {
                event_type: "registration_attempted_for_existing_account",
                user_id: Some(owner),
                session_id: None,
                client,
                data: json!({}),
            },
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}
