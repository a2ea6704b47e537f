//! Administering accounts. Every action is audited with the administrator who took it, in the
//! transaction of its effect; the last administrator can be neither demoted, locked nor deleted.

use auth_core::readiness::Latch;
use auth_core::revocation::Revocation;
use auth_core::shutdown::Shutdown;
use auth_core::token::VerifiedToken;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
use crate::mail::outbox::{self, PASSWORD_RESET};
use crate::service::grants::forget_sessions;
use crate::state::AppState;
use crate::store::admin::{self as store, AccountSummary};
use crate::store::audit::{AuditEvent, record};
use crate::store::{ClientInfo, sessions, users};

/// The role that may use the admin API.
pub const ADMIN: &str = "admin";
/// The most roles one account may have.
pub const MAX_ROLES: usize = 16;

/// Refuses a token without the admin role (403; no token at all is a 401 before this).
pub fn require_admin(token: &VerifiedToken) -> Result<(), ApiError> {
    match token.claims.roles.iter().any(|role| role == ADMIN) {
        true => Ok(()),
        false => Err(ApiError::Forbidden),
    }
}

fn last_admin() -> ApiError {
    ApiError::Conflict {
        field: "roles",
        detail: "this is the last administrator; make another one first",
    }
}

/// What an action did, for the audit log.
struct Action<'a> {
    event_type: &'a str,
    admin: &'a VerifiedToken,
    target: Uuid,
    client: &'a ClientInfo,
    data: serde_json::Value,
}

async fn audit(tx: &mut sqlx::PgConnection, action: Action<'_>) -> Result<(), ApiError> {
    let mut data = action.data;
    data["admin_id"] = json!(action.admin.claims.sub);
    record(
        &mut *tx,
        AuditEvent {
            event_type: action.event_type,
            user_id: Some(action.target),
            session_id: Some(action.admin.claims.sid),
            client: action.client,
            data,
        },
    )
    .await?;
    Ok(())
}

/// The account, or 404.
async fn target(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<AccountSummary, ApiError> {
    store::summary(&mut *tx, id).await?.ok_or(ApiError::NotFound)
}

/// Ends every session and token of `user` in the transaction; returns what to publish after it.
async fn end_sessions(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    user: Uuid,
    reason: &str,
) -> Result<(Vec<Uuid>, Vec<Revocation>), ApiError> {
    let ended = sessions::revoke_all(tx, user, reason).await?;
    let mut revocations = state.revoker.user_and_sessions(user, &ended);
    state.revoker.record(tx, &mut revocations, reason).await?;
    Ok((ended, revocations))
}

async fn finish(
    state: &AppState,
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    (ended, revocations): (Vec<Uuid>, Vec<Revocation>),
) -> Result<(), ApiError> {
    state.revoker.publish_then_commit(tx, &revocations).await?;
    forget_sessions(state, &ended).await;
    Ok(())
}

/// Ends every session and token of `user` for `reason`, audits `event_type` with how many
/// sessions ended, and commits.
async fn end_everything(
    state: &AppState,
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    (admin, user, client): (&VerifiedToken, Uuid, &ClientInfo),
    (reason, event_type): (&str, &str),
) -> Result<(), ApiError> {
    let ended = end_sessions(state, &mut tx, user, reason).await?;
    audit(
        &mut tx,
        Action {
            event_type,
            admin,
            target: user,
            client,
            data: json!({ "sessions_revoked": ended.0.len() }),
        },
    )
    .await?;
    finish(state, tx, ended).await
}

/// Sets an account's roles. Its older access tokens are revoked at once, so no token keeps a
/// removed role (its sessions stay: the next refresh carries the new roles).
pub async fn set_roles(
    state: &AppState,
    admin: &VerifiedToken,
    user: Uuid,
    mut roles: Vec<String>,
    client: &ClientInfo,
) -> Result<AccountSummary, ApiError> {
    let mut problems = Vec::new();
    if roles.len() > MAX_ROLES {
        problems.push(FieldError::new("roles", "at most 16 roles"));
    }
    if let Some(bad) = roles.iter().find(|role| !crate::validation::role(role)) {
        problems.push(FieldError::new(
            "roles",
            format!("{bad:?} is not a role name (a-z, 0-9, _ and -, starting with a letter, at most 32)"),
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    roles.sort();
    roles.dedup();
    let mut tx = state.db.begin().await?;
    let admins = store::lock_admins(&mut tx).await?;
    let before = target(&mut tx, user).await?;
    if admins == [user] && !roles.iter().any(|role| role == ADMIN) {
        return Err(last_admin());
    }
    store::set_roles(&mut tx, user, &roles).await?;
    let mut revocation = state.revoker.user(user);
    state
        .revoker
        .record(&mut tx, std::slice::from_mut(&mut revocation), "roles_changed")
        .await?;
    audit(
        &mut tx,
        Action {
            event_type: "admin_roles_set",
            admin,
            target: user,
            client,
            data: json!({ "before": before.roles, "after": roles }),
        },
    )
    .await?;
    let after = target(&mut tx, user).await?;
    finish(state, tx, (Vec::new(), vec![revocation])).await?;
    Ok(after)
}

/// Locks an account (until `until`, or for good) and ends its sessions; or unlocks it.
pub async fn set_lock(
    state: &AppState,
    admin: &VerifiedToken,
    user: Uuid,
    lock: Option<Option<OffsetDateTime>>,
    client: &ClientInfo,
) -> Result<AccountSummary, ApiError> {
    let mut tx = state.db.begin().await?;
    let admins = store::lock_admins(&mut tx).await?;
    target(&mut tx, user).await?;
    let outcome = match lock {
        Some(until) => {
            if admins == [user] {
                return Err(last_admin());
            }
            let until = until.unwrap_or(OffsetDateTime::new_utc(
                time::Date::from_calendar_date(9999, time::Month::December, 31).unwrap_or(time::Date::MAX),
                time::Time::MIDNIGHT,
            ));
            store::set_lock(&mut tx, user, Some(until)).await?;
            let ended = end_sessions(state, &mut tx, user, "admin_locked").await?;
            audit(
                &mut tx,
                Action {
                    event_type: "admin_user_locked",
                    admin,
                    target: user,
                    client,
                    data: json!({ "until": until.unix_timestamp(), "sessions_revoked": ended.0.len() }),
                },
            )
            .await?;
            ended
        }
        None => {
            store::set_lock(&mut tx, user, None).await?;
            audit(
                &mut tx,
                Action {
                    event_type: "admin_user_unlocked",
                    admin,
                    target: user,
                    client,
                    data: json!({}),
                },
            )
            .await?;
            (Vec::new(), Vec::new())
        }
    };
    let after = target(&mut tx, user).await?;
    finish(state, tx, outcome).await?;
    Ok(after)
}

/// Ends every session and token of an account.
pub async fn revoke_sessions(
    state: &AppState,
    admin: &VerifiedToken,
    user: Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    target(&mut tx, user).await?;
    end_everything(
        state,
        tx,
        (admin, user, client),
        ("admin_revoked", "admin_sessions_revoked"),
    )
    .await
}

/// Makes the owner choose a new password: the current one stops working, every session ends,
/// and a reset link is mailed.
pub async fn force_password_reset(
    state: &AppState,
    admin: &VerifiedToken,
    user: Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let account = target(&mut tx, user).await?;
    store::disable_password(&mut tx, user).await?;
    outbox::enqueue(&mut *tx, PASSWORD_RESET, &account.email).await?;
    end_everything(
        state,
        tx,
        (admin, user, client),
        ("admin_forced_reset", "admin_password_reset_forced"),
    )
    .await
}

/// Deletes an account (its address and username become free) and ends everything it had.
pub async fn delete_user(
    state: &AppState,
    admin: &VerifiedToken,
    user: Uuid,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    let mut tx = state.db.begin().await?;
    let admins = store::lock_admins(&mut tx).await?;
    target(&mut tx, user).await?;
    if admins == [user] {
        return Err(last_admin());
    }
    users::soft_delete(&mut tx, user).await?;
    end_everything(
        state,
        tx,
        (admin, user, client),
        ("admin_deleted", "admin_user_deleted"),
    )
    .await
}

/// Audits a cleanup an administrator asked for.
pub async fn record_cleanup(
    state: &AppState,
    admin: &VerifiedToken,
    report: Option<&std::collections::BTreeMap<&'static str, u64>>,
    client: &ClientInfo,
) -> Result<(), ApiError> {
    record(
        &state.db,
        AuditEvent {
            event_type: "admin_cleanup",
            user_id: None,
            session_id: Some(admin.claims.sid),
            client,
            data: json!({ "admin_id": admin.claims.sub, "removed": report }),
        },
    )
    .await?;
    Ok(())
}

/// When [`bootstrap`] acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// Always (`auth-server admin create`: the operator asks now).
    Always,
    /// Only while no account is an administrator (`AUTH_ADMIN_BOOTSTRAP__*`, at every start): an
    /// administrator demoted or deleted later is not brought back by a restart.
    WhileThereIsNone,
}

/// `AUTH_ADMIN_BOOTSTRAP__*`: the first administrator, made at start while there is none (as a
/// Kubernetes Secret can say it, where `auth-server admin create` would need an exec).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BootstrapSettings {
    /// The administrator's address.
    pub email: Option<String>,
    /// The password of the account if it has to be created
    /// (`AUTH_ADMIN_BOOTSTRAP__PASSWORD_FILE`); an existing account keeps its own.
    pub password: Option<SecretString>,
}

impl BootstrapSettings {
    /// The first invalid setting, as (name, problem).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        const EMAIL: &str = "AUTH_ADMIN_BOOTSTRAP__EMAIL";
        const PASSWORD: &str = "AUTH_ADMIN_BOOTSTRAP__PASSWORD";
        match (&self.email, &self.password) {
            (None, None) => None,
            (Some(_), None) => Some((PASSWORD, format!("is required with {EMAIL}"))),
            (None, Some(_)) => Some((EMAIL, format!("is required with {PASSWORD}"))),
            (Some(email), Some(password)) => crate::validation::email("email", email.trim())
                .map(|problem| (EMAIL, problem.message))
                .or_else(|| {
                    crate::passwords::check_new_password("password", password.expose_secret(), email.trim())
                        .map(|problem| (PASSWORD, problem.message))
                }),
        }
    }

    /// Makes the administrator in the background, once the database answers (a start never waits
    /// on it), unless one exists; releases `done` then, so a replica is ready only after it.
    pub fn spawn(self, db: sqlx::PgPool, bcrypt_cost: u32, done: Latch, shutdown: Shutdown) {
        let (Some(email), Some(password)) = (self.email, self.password) else {
            return;
        };
        tokio::spawn(async move {
            loop {
                let attempt = bootstrap(
                    &db,
                    &email,
                    password.expose_secret(),
                    bcrypt_cost,
                    Bootstrap::WhileThereIsNone,
                );
                match attempt.await {
                    Ok(outcome) => {
                        tracing::info!(%outcome, "administrator bootstrap");
                        return done.release();
                    }
                    Err(error) => tracing::warn!(%error, "administrator bootstrap failed; retrying"),
                }
                tokio::select! {
                    () = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }
}

/// The pause between two bootstrap attempts while the database is unreachable or unmigrated.
const BOOTSTRAP_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// The advisory lock key ("authboot"): replicas starting together bootstrap one at a time.
const BOOTSTRAP_LOCK: i64 = 0x6175_7468_626f_6f74;

/// Makes `email` an administrator: creates the account with `password` (the policy applies; the
/// address counts as verified, the operator vouches for it), or, when it exists, adds the role
/// and leaves its password alone. Safe to run again.
pub async fn bootstrap(
    db: &sqlx::PgPool,
    email: &str,
    password: &str,
    bcrypt_cost: u32,
    when: Bootstrap,
) -> anyhow::Result<String> {
    let email = email.trim();
    if let Some(problem) = crate::validation::email("email", email) {
        anyhow::bail!("--email: {}", problem.message);
    }
    let mut tx = db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&mut *tx)
        .await?;
    if when == Bootstrap::WhileThereIsNone && !store::lock_admins(&mut tx).await?.is_empty() {
        return Ok(format!("{email} left alone: there is an administrator"));
    }
    let existing: Option<(Uuid, Vec<String>)> = sqlx::query_as(
        "SELECT id, roles FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(email)
    .fetch_optional(&mut *tx)
    .await?;
    let (id, outcome) = match existing {
        Some((id, roles)) if roles.iter().any(|role| role == ADMIN) => (id, "was an administrator already"),
        Some((id, mut roles)) => {
            roles.push(ADMIN.to_owned());
            roles.sort();
            store::set_roles(&mut tx, id, &roles).await?;
            (id, "existed; it is an administrator now")
        }
        None => {
            if let Some(problem) = crate::passwords::check_new_password("password", password, email) {
                anyhow::bail!("the password: {}", problem.message);
            }
            let password = password.to_owned();
            let hash = tokio::task::spawn_blocking(move || bcrypt::hash(password, bcrypt_cost)).await??;
            let id = users::insert(
                &mut tx,
                &users::NewUser {
                    email,
                    username: None,
                    password_hash: &hash,
                    first_name: None,
                    last_name: None,
                },
            )
            .await?;
            store::set_roles(&mut tx, id, &[ADMIN.to_owned(), "user".to_owned()]).await?;
            users::mark_verified(&mut tx, id, false).await?;
            (id, "created as an administrator")
        }
    };
    record(
        &mut *tx,
        AuditEvent {
            event_type: "admin_bootstrapped",
            user_id: Some(id),
            session_id: None,
            client: &ClientInfo::default(),
            data: json!({ "outcome": outcome }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(format!("{email} ({id}) {outcome}"))
}
