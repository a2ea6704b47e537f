//! The `audit_logs` table: security events, never secrets.

use serde_json::Value;
use uuid::Uuid;

use super::ClientInfo;

/// One security event.
pub struct AuditEvent<'a> {
    /// What happened (`login_succeeded`, `refresh_token_reused`, …).
    pub event_type: &'a str,
    /// Whose account, if known.
    pub user_id: Option<Uuid>,
    /// Which session, if any.
    pub session_id: Option<Uuid>,
    /// From where.
    pub client: &'a ClientInfo,
    /// Details (a JSON object).
    pub data: Value,
}

/// Appends `event`, and writes it as a structured log line (target `audit`) for log pipelines.
pub async fn record(executor: impl sqlx::PgExecutor<'_>, event: AuditEvent<'_>) -> Result<(), sqlx::Error> {
    tracing::info!(
        target: "audit",
        event = event.event_type,
        user_id = ?event.user_id,
        session_id = ?event.session_id,
        ip = event.client.ip_text().as_deref().unwrap_or("-"),
        data = %event.data,
        "security event"
    );
    sqlx::query(
        "INSERT INTO audit_logs (event_type, user_id, session_id, ip, user_agent, data) \
         VALUES ($1, $2, $3, $4::inet, $5, $6)",
    )
    .bind(event.event_type)
    .bind(event.user_id)
    .bind(event.session_id)
    .bind(event.client.ip_text())
    .bind(event.client.user_agent.as_deref())
    .bind(event.data)
    .execute(executor)
    .await?;
    Ok(())
}
