//! The `users` table.

use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// A live (not deleted) account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    /// Its id.
    pub id: Uuid,
    /// Its email address, as entered.
    pub email: String,
    /// Its optional username.
    pub username: Option<String>,
    /// The bcrypt hash.
    pub password_hash: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Free-form profile data (a JSON object).
    pub profile: serde_json::Value,
    /// Locked until then, if set and in the future.
    pub locked_until: Option<OffsetDateTime>,
    /// Disabled by an administrator until then, if set and in the future.
    pub disabled_until: Option<OffsetDateTime>,
    /// When the account was created.
    pub created_at: OffsetDateTime,
    /// When it last changed.
    pub updated_at: OffsetDateTime,
    /// When its tokens were last revoked wholesale (unix seconds), if that still matters.
    pub revoked_before: Option<i64>,
}

impl User {
    /// Whether the account is locked now.
    pub fn is_locked(&self) -> bool {
        self.locked_until
            .is_some_and(|until| until > OffsetDateTime::now_utc())
    }

    /// Whether an administrator disabled the account for now.
    pub fn is_disabled(&self) -> bool {
        self.disabled_until
            .is_some_and(|until| until > OffsetDateTime::now_utc())
    }
}

/// The columns of [`User`], as a literal so queries stay `&'static str`.
macro_rules! user_query {
    ($tail:literal) => {
        concat!(
            "SELECT u.id, u.email, u.username, u.password_hash, u.first_name, u.last_name, \
             u.email_verified, u.roles, u.profile, u.locked_until, u.disabled_until, u.created_at, u.updated_at, \
             (SELECT extract(epoch FROM r.revoked_before)::bigint FROM revoked_tokens r \
              WHERE r.kind = 'user' AND r.value = u.id::text AND r.expires_at > now()) AS revoked_before \
             FROM users u WHERE u.deleted_at IS NULL AND ",
            $tail
        )
    };
}

/// A new account.
pub struct NewUser<'a> {
    /// Email address.
    pub email: &'a str,
    /// Optional username.
    pub username: Option<&'a str>,
    /// bcrypt hash.
    pub password_hash: &'a str,
    /// Given name.
    pub first_name: Option<&'a str>,
    /// Family name.
    pub last_name: Option<&'a str>,
}

/// Inserts an account; a taken email or username surfaces as a unique violation.
pub async fn insert(conn: &mut PgConnection, user: &NewUser<'_>) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO users (email, username, password_hash, first_name, last_name) \
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(user.email)
    .bind(user.username)
    .bind(user.password_hash)
    .bind(user.first_name)
    .bind(user.last_name)
    .fetch_one(conn)
    .await
}

/// The live account with this id.
pub async fn find(executor: impl sqlx::PgExecutor<'_>, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(user_query!("u.id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await
}

/// The live account with this email address (case-insensitive).
pub async fn find_by_email(pool: &PgPool, email: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(user_query!("lower(u.email) = lower($1)"))
        .bind(email)
        .fetch_optional(pool)
        .await
}

/// The live account with this username (case-insensitive).
pub async fn find_by_username(pool: &PgPool, username: &str) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as(user_query!("lower(u.username) = lower($1)"))
        .bind(username)
        .fetch_optional(pool)
        .await
}

/// How failed logins lock an account.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    /// Consecutive failures that lock the account (0: never).
    pub threshold: u32,
    /// How long the first lock lasts; each further failure after it doubles it.
    pub duration: std::time::Duration,
    /// The longest lock.
    pub max_duration: std::time::Duration,
}

/// Counts a failed password check, in one statement so parallel failures each count. The failure
/// that reaches the threshold locks the account, each further one for twice as long (up to the
/// maximum); failures while it is locked are not counted, so strangers cannot keep a lock alive
/// past its term. Returns whether this failure locked it.
pub async fn record_failure(
    conn: &mut PgConnection,
    id: Uuid,
    lockout: Lockout,
) -> Result<bool, sqlx::Error> {
    let locked: Option<bool> = sqlx::query_scalar(
        "UPDATE users SET failed_login_count = failed_login_count + 1,            locked_until = CASE WHEN $2 > 0 AND failed_login_count + 1 >= $2              THEN now() + LEAST($3 * power(2, LEAST(failed_login_count + 1 - $2, 30)), $4)              ELSE locked_until END          WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now())          RETURNING locked_until IS NOT NULL AND locked_until > now()",
    )
    .bind(id)
    .bind(i32::try_from(lockout.threshold).unwrap_or(i32::MAX))
    .bind(lockout.duration)
    .bind(lockout.max_duration)
    .fetch_optional(conn)
    .await?;
    Ok(locked == Some(true))
}

/// The password hash, lockout and disabling of a live account, with its row locked until the
/// transaction ends: a login creates its session only if the account is still what it checked.
pub async fn lock_for_login(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, bool, bool)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT password_hash, coalesce(locked_until > now(), false), coalesce(disabled_until > now(), false) \
         FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Records a successful login: the failure count and any lock are cleared.
pub async fn record_success(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET last_login_at = now(), failed_login_count = 0, locked_until = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Changes to a profile: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Default)]
pub struct ProfileChanges {
    /// New username.
    pub username: Option<Option<String>>,
    /// New given name.
    pub first_name: Option<Option<String>>,
    /// New family name.
    pub last_name: Option<Option<String>>,
    /// New profile data (replaces the whole object).
    pub profile: Option<serde_json::Value>,
}

/// Applies `changes` and returns the updated account.
pub async fn update_profile(
    pool: &PgPool,
    id: Uuid,
    changes: ProfileChanges,
) -> Result<Option<User>, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE users SET \
         username = CASE WHEN $2 THEN $3 ELSE username END, \
         first_name = CASE WHEN $4 THEN $5 ELSE first_name END, \
         last_name = CASE WHEN $6 THEN $7 ELSE last_name END, \
         profile = COALESCE($8, profile) \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(changes.username.is_some())
    .bind(changes.username.flatten())
    .bind(changes.first_name.is_some())
    .bind(changes.first_name.flatten())
    .bind(changes.last_name.is_some())
    .bind(changes.last_name.flatten())
    .bind(changes.profile)
    .execute(pool)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    find(pool, id).await
}

/// Replaces the password hash.
pub async fn set_password(conn: &mut PgConnection, id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks the address verified; with `clear_lockout` also ends any lock and failure count (a
/// password reset proves the owner reads the address).
pub async fn mark_verified(
    conn: &mut PgConnection,
    id: Uuid,
    clear_lockout: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email_verified = true, \
         failed_login_count = CASE WHEN $2 THEN 0 ELSE failed_login_count END, \
         locked_until = CASE WHEN $2 THEN NULL ELSE locked_until END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(clear_lockout)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces a hash with a stronger one of the same password, unless it changed meanwhile.
pub async fn upgrade_hash(pool: &PgPool, id: Uuid, old: &str, new: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
        .bind(id)
        .bind(old)
        .bind(new)
        .execute(pool)
        .await?;
    Ok(())
}

/// Marks the account deleted; its email and username become free again.
pub async fn soft_delete(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let result = sqlx::query("UPDATE users SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(result.rows_affected() == 1)
}
