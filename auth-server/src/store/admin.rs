//! What administrators read and change: accounts by search, roles, locks, the audit log.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// An account as an administrator sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountSummary {
    /// Its id.
    pub id: Uuid,
    /// Email address.
    pub email: String,
    /// Username.
    pub username: Option<String>,
    /// Whether the address is verified.
    pub email_verified: bool,
    /// Roles.
    pub roles: Vec<String>,
    /// Locked (by failed logins, or by an administrator) until then; in the past: not locked.
    pub locked_until: Option<OffsetDateTime>,
    /// Consecutive failed logins.
    pub failed_login_count: i32,
    /// The last successful login.
    pub last_login_at: Option<OffsetDateTime>,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// Which accounts to list.
#[derive(Debug, Default)]
pub struct AccountFilter {
    /// The address starts with this (case-insensitive).
    pub email_prefix: Option<String>,
    /// Has this role.
    pub role: Option<String>,
    /// Locked now, or not.
    pub locked: Option<bool>,
    /// Verified, or not.
    pub verified: Option<bool>,
    /// Created at or after.
    pub created_from: Option<OffsetDateTime>,
    /// Created before.
    pub created_to: Option<OffsetDateTime>,
}

/// `LIKE` treats `%`, `_` and `\` specially; a prefix matches them literally.
fn like_prefix(prefix: &str) -> String {
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{}%", escaped.to_lowercase())
}

/// One page of accounts matching `filter`, newest first, after the `(created_at, id)` position of
/// the last one seen (keyset pagination: stable under inserts, no offset scan).
pub async fn search(
    pool: &PgPool,
    filter: &AccountFilter,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> Result<Vec<AccountSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, username, email_verified, roles, \
                GREATEST(locked_until, disabled_until) AS locked_until, failed_login_count, \
                last_login_at, created_at \
         FROM users \
         WHERE deleted_at IS NULL \
           AND ($1::text IS NULL OR lower(email) LIKE $1) \
           AND ($2::text IS NULL OR $2 = ANY(roles)) \
           AND ($3::boolean IS NULL OR coalesce(GREATEST(locked_until, disabled_until) > now(), false) = $3) \
           AND ($4::boolean IS NULL OR email_verified = $4) \
           AND ($5::timestamptz IS NULL OR created_at >= $5) \
           AND ($6::timestamptz IS NULL OR created_at < $6) \
           AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8)) \
         ORDER BY created_at DESC, id DESC \
         LIMIT $9",
    )
    .bind(filter.email_prefix.as_deref().map(like_prefix))
    .bind(filter.role.as_deref())
    .bind(filter.locked)
    .bind(filter.verified)
    .bind(filter.created_from)
    .bind(filter.created_to)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One account, if it exists.
pub async fn summary(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<AccountSummary>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, email, username, email_verified, roles, \
                GREATEST(locked_until, disabled_until) AS locked_until, failed_login_count, \
                last_login_at, created_at \
         FROM users WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(executor)
    .await
}

/// Locks every administrator's row until the transaction ends and returns their ids: two
/// administrators demoting each other at once cannot both succeed and leave none.
pub async fn lock_admins(conn: &mut PgConnection) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM users WHERE 'admin' = ANY(roles) AND deleted_at IS NULL ORDER BY id FOR UPDATE",
    )
    .fetch_all(conn)
    .await
}

/// Sets an account's roles.
pub async fn set_roles(conn: &mut PgConnection, id: Uuid, roles: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET roles = $2 WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .bind(roles)
        .execute(conn)
        .await?;
    Ok(())
}

/// Disables an account until `until`, for every login (`None`: lifts that and the failed-login
/// lockout, and clears the failure count).
pub async fn set_lock(
    conn: &mut PgConnection,
    id: Uuid,
    until: Option<OffsetDateTime>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET disabled_until = $2, \
         locked_until = CASE WHEN $2 IS NULL THEN NULL ELSE locked_until END, \
         failed_login_count = CASE WHEN $2 IS NULL THEN 0 ELSE failed_login_count END \
         WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .bind(until)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the password unusable: no bcrypt hash starts with `!`, so every login fails (with the
/// same generic answer) until the owner sets a new one through a reset link.
pub async fn disable_password(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET password_hash = '!reset-required', password_changed_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// One audit entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    /// Its position (entries are numbered in the order they were written).
    pub id: i64,
    /// What happened.
    pub event_type: String,
    /// Whose account.
    pub user_id: Option<Uuid>,
    /// Which session.
    pub session_id: Option<Uuid>,
    /// From which address.
    pub ip: Option<String>,
    /// With which user agent.
    pub user_agent: Option<String>,
    /// Details.
    pub data: Value,
    /// When.
    pub created_at: OffsetDateTime,
}

/// Which entries to list.
#[derive(Debug, Default)]
pub struct AuditFilter {
    /// About this account.
    pub user_id: Option<Uuid>,
    /// Of this type.
    pub event_type: Option<String>,
    /// At or after.
    pub from: Option<OffsetDateTime>,
    /// Before.
    pub to: Option<OffsetDateTime>,
}

/// One page of entries matching `filter`, newest first, before entry `before`.
pub async fn audit(
    pool: &PgPool,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, event_type, user_id, session_id, host(ip) AS ip, user_agent, data, created_at \
         FROM audit_logs \
         WHERE ($1::uuid IS NULL OR user_id = $1) \
           AND ($2::text IS NULL OR event_type = $2) \
           AND ($3::timestamptz IS NULL OR created_at >= $3) \
           AND ($4::timestamptz IS NULL OR created_at < $4) \
           AND ($5::bigint IS NULL OR id < $5) \
         ORDER BY id DESC \
         LIMIT $6",
    )
    .bind(filter.user_id)
    .bind(filter.event_type.as_deref())
    .bind(filter.from)
    .bind(filter.to)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}
