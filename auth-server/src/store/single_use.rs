//! `password_reset_tokens` and `email_verification_tokens`: single-use tokens, stored hashed.

use sqlx::PgConnection;
use uuid::Uuid;

/// Which kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SingleUse {
    /// Sets a new password.
    PasswordReset,
    /// Proves the owner reads the address.
    EmailVerification,
}

/// Voids the user's unused tokens of this kind (a newer request replaces older ones) and stores a
/// new one, for `email` (the address a verification is for).
pub async fn issue(
    conn: &mut PgConnection,
    kind: SingleUse,
    user_id: Uuid,
    email: &str,
    hash: &[u8],
    lifetime_secs: f64,
) -> Result<(), sqlx::Error> {
    let (void, insert) = match kind {
        SingleUse::PasswordReset => (
            "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
            "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at) \
             VALUES ($1, $2, now() + make_interval(secs => $3))",
        ),
        SingleUse::EmailVerification => (
            "UPDATE email_verification_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
            "INSERT INTO email_verification_tokens (user_id, token_hash, expires_at, email) \
             VALUES ($1, $2, now() + make_interval(secs => $3), $4)",
        ),
    };
    sqlx::query(void).bind(user_id).execute(&mut *conn).await?;
    let insert = sqlx::query(insert).bind(user_id).bind(hash).bind(lifetime_secs);
    match kind {
        SingleUse::PasswordReset => insert.execute(&mut *conn).await?,
        SingleUse::EmailVerification => insert.bind(email).execute(&mut *conn).await?,
    };
    Ok(())
}

/// The tokens of a kind that still work, joined to their user (`t`, `u`; the hash is `$1`): unused,
/// unexpired, the user not deleted, and for a verification the user's address unchanged.
fn valid(kind: SingleUse) -> String {
    let (table, same_address) = match kind {
        SingleUse::PasswordReset => ("password_reset_tokens", ""),
        SingleUse::EmailVerification => (
            "email_verification_tokens",
            " AND lower(u.email) = lower(t.email)",
        ),
    };
    format!(
        "{table} t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.used_at IS NULL AND t.expires_at > now() AND u.deleted_at IS NULL{same_address}"
    )
}

/// The user a token that still works belongs to, without using it.
pub async fn peek(
    executor: impl sqlx::PgExecutor<'_>,
    kind: SingleUse,
    hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    // Built from constants only.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT u.id FROM {}", valid(kind))))
        .bind(hash)
        .fetch_optional(executor)
        .await
}

/// Uses a token that still works (locking it, so of two uses one wins) and returns its user.
pub async fn consume(
    conn: &mut PgConnection,
    kind: SingleUse,
    hash: &[u8],
) -> Result<Option<Uuid>, sqlx::Error> {
    let table = match kind {
        SingleUse::PasswordReset => "password_reset_tokens",
        SingleUse::EmailVerification => "email_verification_tokens",
    };
    // Built from constants only.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET used_at = now() WHERE id = \
         (SELECT t.id FROM {} FOR UPDATE OF t) RETURNING user_id",
        valid(kind)
    )))
    .bind(hash)
    .fetch_optional(conn)
    .await
}
