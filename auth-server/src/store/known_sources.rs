//! Where an account has logged in from before: devices (by the token they keep) and addresses.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::ClientInfo;

/// Whether `user_id` logged in within `window` from the device whose token hashes to `device`,
/// or from the client's address block (the address itself, or its IPv6 /64).
pub async fn is_known(
    pool: &PgPool,
    user_id: Uuid,
    client: &ClientInfo,
    device: Option<&[u8]>,
    window: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM known_devices \
                        WHERE token_hash = $2 AND user_id = $1 AND last_seen_at > now() - $4) \
             OR EXISTS (SELECT 1 FROM sessions \
                        WHERE user_id = $1 AND ip <<= $3::inet AND created_at > now() - $4)",
    )
    .bind(user_id)
    .bind(device)
    .bind(client.network())
    .bind(window)
    .fetch_one(pool)
    .await
}

/// Remembers (or refreshes) the device whose token hashes to `device` for `user_id`.
pub async fn remember(conn: &mut PgConnection, user_id: Uuid, device: &[u8]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO known_devices (token_hash, user_id) VALUES ($1, $2) \
         ON CONFLICT (token_hash) DO UPDATE SET last_seen_at = now() WHERE known_devices.user_id = $2",
    )
    .bind(device)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}
