//! `/api/admin/*`: administering accounts (role `admin`; others get 403, no token 401).

use poem::Request;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Object, OpenApi};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::Tag;
use super::client::client_info;
use super::json_body::{JsonBody, OptionalJsonBody};
use super::models::SessionView;
use super::responses::{
    BAD_REQUEST, BODY, CONFLICT, Errors, FORBIDDEN, NOT_FOUND, UNAUTHORIZED, UNAVAILABLE, UNPROCESSABLE,
};
use super::security::BearerAuth;
use crate::error::{ApiError, FieldError};
use crate::service::admin::{self, require_admin};
use crate::state::SharedState;
use crate::store::admin::{AccountFilter, AccountSummary, AuditEntry, AuditFilter, audit, search, summary};
use crate::store::sessions;

/// Administering accounts.
pub struct AdminApi {
    state: SharedState,
}

impl AdminApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// An account as an administrator sees it.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccountView {
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
    /// Whether it is locked now.
    pub locked: bool,
    /// Locked until then, if locked.
    pub locked_until: Option<OffsetDateTime>,
    /// Consecutive failed logins.
    pub failed_login_count: i32,
    /// The last successful login.
    pub last_login_at: Option<OffsetDateTime>,
    /// Created.
    pub created_at: OffsetDateTime,
}

impl From<AccountSummary> for AccountView {
    fn from(account: AccountSummary) -> Self {
        let locked_until = account
            .locked_until
            .filter(|until| *until > OffsetDateTime::now_utc());
        Self {
            id: account.id,
            email: account.email,
            username: account.username,
            email_verified: account.email_verified,
            roles: account.roles,
            locked: locked_until.is_some(),
            locked_until,
            failed_login_count: account.failed_login_count,
            last_login_at: account.last_login_at,
            created_at: account.created_at,
        }
    }
}

/// One page of accounts.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AccountPage {
    /// The accounts, newest first.
    pub users: Vec<AccountView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next: Option<String>,
}

/// An account with its live sessions.
#[derive(Debug, Object)]
pub struct AccountDetail {
    /// The account.
    pub user: AccountView,
    /// Its live sessions, newest first.
    pub sessions: Vec<SessionView>,
}

/// New roles for an account.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct RolesRequest {
    /// The complete set of roles (`admin` grants this API).
    pub roles: Vec<String>,
}

impl Example for RolesRequest {
    fn example() -> Self {
        Self {
            roles: vec!["user".to_owned(), "admin".to_owned()],
        }
    }
}

/// How long to lock an account.
#[derive(Debug, Object, Deserialize)]
#[oai(deny_unknown_fields, example, skip_serializing_if_is_none)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// Until when (RFC 3339); for good when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

impl Example for LockRequest {
    fn example() -> Self {
        Self {
            until: Some(time::macros::datetime!(2030-01-01 00:00 UTC)),
        }
    }
}

/// One audit entry.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditEntryView {
    /// Its position in the log.
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
    pub data: serde_json::Value,
    /// When.
    pub created_at: OffsetDateTime,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            id: entry.id,
            event_type: entry.event_type,
            user_id: entry.user_id,
            session_id: entry.session_id,
            ip: entry.ip,
            user_agent: entry.user_agent,
            data: entry.data,
            created_at: entry.created_at,
        }
    }
}

/// One page of the audit log.
#[derive(Debug, Object)]
#[oai(skip_serializing_if_is_none)]
pub struct AuditPage {
    /// The entries, newest first.
    pub entries: Vec<AuditEntryView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<i64>,
}

/// What a cleanup run removed.
#[derive(Debug, Object)]
pub struct CleanupView {
    /// Whether it ran here (false: another replica was running it).
    pub ran: bool,
    /// Rows removed, by table.
    pub removed: std::collections::BTreeMap<String, u64>,
}

/// Done.
#[derive(ApiResponse)]
pub enum Done {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

/// The page size when none is asked for.
const DEFAULT_PAGE: i64 = 50;

/// Rows fetched one beyond the page size: the page, and whether another follows.
fn split_page<T>(mut rows: Vec<T>, limit: i64) -> (Vec<T>, bool) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let more = rows.len() > limit;
    rows.truncate(limit);
    (rows, more)
}

/// A users cursor: `<created_at in Unix nanoseconds>_<id>`.
fn users_cursor(account: &AccountView) -> String {
    format!("{}_{}", account.created_at.unix_timestamp_nanos(), account.id)
}

fn parse_users_cursor(cursor: &str) -> Result<(OffsetDateTime, Uuid), ApiError> {
    let bad = || {
        ApiError::Validation(vec![FieldError::new(
            "after",
            "is not a cursor this API returned",
        )])
    };
    let (at, id) = cursor.split_once('_').ok_or_else(bad)?;
    let at = at
        .parse::<i128>()
        .ok()
        .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok());
    Ok((at.ok_or_else(bad)?, id.parse().map_err(|_| bad())?))
}

/// An unparsable `{id}` is a 400.
type AdminErrors = Errors<{ BAD_REQUEST | UNAUTHORIZED | FORBIDDEN | NOT_FOUND | UNAVAILABLE }>;
type AdminChangeErrors = Errors<{ BODY | UNAUTHORIZED | FORBIDDEN | NOT_FOUND | CONFLICT }>;

#[OpenApi(prefix_path = "/api/admin", tag = "Tag::Admin")]
impl AdminApi {
    /// List and search accounts
    ///
    /// Newest first, filtered by address prefix, role, lock, verification and creation time;
    /// pages are chained through `next` (keyset pagination).
    #[oai(path = "/users", method = "get", operation_id = "listUsers")]
    #[allow(clippy::too_many_arguments)]
    async fn list_users(
        &self,
        auth: BearerAuth,
        /// The address starts with this (case-insensitive).
        email_prefix: Query<Option<String>>,
        /// Has this role.
        role: Query<Option<String>>,
        /// Locked now (true) or not (false).
        locked: Query<Option<bool>>,
        /// Verified (true) or not (false).
        verified: Query<Option<bool>>,
        /// Created at or after.
        created_from: Query<Option<OffsetDateTime>>,
        /// Created before.
        created_to: Query<Option<OffsetDateTime>>,
        /// The `next` of the previous page.
        after: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> Result<
        Json<AccountPage>,
        Errors<{ BAD_REQUEST | UNPROCESSABLE | UNAUTHORIZED | FORBIDDEN | UNAVAILABLE }>,
    > {
        require_admin(&auth.0)?;
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let after = after.0.as_deref().map(parse_users_cursor).transpose()?;
        let filter = AccountFilter {
            email_prefix: email_prefix.0,
            role: role.0,
            locked: locked.0,
            verified: verified.0,
            created_from: created_from.0,
            created_to: created_to.0,
        };
        // One more than asked tells whether there is a next page.
        let (found, more) = split_page(search(&self.state.db, &filter, after, limit + 1).await?, limit);
        let users: Vec<AccountView> = found.into_iter().map(AccountView::from).collect();
        let next = users.last().filter(|_| more).map(users_cursor);
        Ok(Json(AccountPage { users, next }))
    }

    /// One account with its live sessions
    #[oai(path = "/users/:id", method = "get", operation_id = "getUser")]
    async fn get_user(&self, auth: BearerAuth, id: Path<Uuid>) -> Result<Json<AccountDetail>, AdminErrors> {
        require_admin(&auth.0)?;
        let user = summary(&self.state.db, id.0).await?.ok_or(ApiError::NotFound)?;
        let sessions = sessions::list_active(&self.state.db, id.0).await?;
        Ok(Json(AccountDetail {
            user: user.into(),
            sessions: sessions
                .into_iter()
                .map(|session| SessionView::new(session, Uuid::nil()))
                .collect(),
        }))
    }

    /// Set an account's roles
    ///
    /// Effective at once: the account's older access tokens are revoked. The last administrator
    /// cannot lose the `admin` role (409).
    #[oai(path = "/users/:id/roles", method = "put", operation_id = "setRoles")]
    async fn set_roles(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: JsonBody<RolesRequest>,
    ) -> Result<Json<AccountView>, AdminChangeErrors> {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        let account = admin::set_roles(&self.state, &auth.0, id.0, body.0.roles, &client).await?;
        Ok(Json(account.into()))
    }

    /// Lock an account
    ///
    /// Until the given time or for good; its sessions and tokens are revoked. Its logins get the
    /// same answer as a wrong password.
    #[oai(path = "/users/:id/lock", method = "post", operation_id = "lockUser")]
    async fn lock(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
        body: OptionalJsonBody<LockRequest>,
    ) -> Result<Json<AccountView>, AdminChangeErrors> {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        let account = admin::set_lock(&self.state, &auth.0, id.0, Some(body.0.until), &client).await?;
        Ok(Json(account.into()))
    }

    /// Unlock an account
    ///
    /// Ends a lock (an administrator's or the failed-login lockout) and clears the failure count.
    #[oai(path = "/users/:id/unlock", method = "post", operation_id = "unlockUser")]
    async fn unlock(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Json<AccountView>, AdminErrors> {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        let account = admin::set_lock(&self.state, &auth.0, id.0, None, &client).await?;
        Ok(Json(account.into()))
    }

    /// Revoke an account's sessions
    ///
    /// Every session and access token of the account, everywhere.
    #[oai(
        path = "/users/:id/revoke-sessions",
        method = "post",
        operation_id = "revokeUserSessions"
    )]
    async fn revoke_sessions(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Done, AdminErrors> {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        admin::revoke_sessions(&self.state, &auth.0, id.0, &client).await?;
        Ok(Done::NoContent)
    }

    /// Force a password reset
    ///
    /// The current password stops working, every session ends, and a reset link is mailed.
    #[oai(
        path = "/users/:id/force-password-reset",
        method = "post",
        operation_id = "forcePasswordReset"
    )]
    async fn force_password_reset(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Done, AdminErrors> {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        admin::force_password_reset(&self.state, &auth.0, id.0, &client).await?;
        Ok(Done::NoContent)
    }

    /// Delete an account
    ///
    /// Its address and username become free; everything it had is revoked. The last
    /// administrator cannot be deleted (409).
    #[oai(path = "/users/:id", method = "delete", operation_id = "deleteUser")]
    async fn delete_user(
        &self,
        req: &Request,
        auth: BearerAuth,
        id: Path<Uuid>,
    ) -> Result<Done, Errors<{ BAD_REQUEST | UNAUTHORIZED | FORBIDDEN | NOT_FOUND | CONFLICT | UNAVAILABLE }>>
    {
        require_admin(&auth.0)?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        admin::delete_user(&self.state, &auth.0, id.0, &client).await?;
        Ok(Done::NoContent)
    }

    /// Clean up now
    ///
    /// Deletes what no longer matters (dead sessions' refresh tokens, used and expired single-use
    /// tokens, expired revocations, delivered mail, audit entries past their retention) without
    /// waiting for the periodic run; one replica at a time.
    #[oai(path = "/cleanup", method = "post", operation_id = "runCleanup")]
    async fn cleanup(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<Json<CleanupView>, Errors<{ UNAUTHORIZED | FORBIDDEN | UNAVAILABLE }>> {
        require_admin(&auth.0)?;
        let report = self.state.cleanup.run_once().await?;
        let client = client_info(req, self.state.trusted_proxy_hops);
        admin::record_cleanup(&self.state, &auth.0, report.as_ref(), &client).await?;
        Ok(Json(CleanupView {
            ran: report.is_some(),
            removed: report
                .unwrap_or_default()
                .into_iter()
                .map(|(table, rows)| (table.to_owned(), rows))
                .collect(),
        }))
    }

    /// Query the audit log
    ///
    /// Newest first, by account, event type and time range; pages are chained through `next`.
    #[oai(path = "/audit", method = "get", operation_id = "auditLog")]
    #[allow(clippy::too_many_arguments)]
    async fn audit_log(
        &self,
        auth: BearerAuth,
        /// About this account.
        user_id: Query<Option<Uuid>>,
        /// Of this type (`login_failed`, `admin_roles_set`, …).
        event_type: Query<Option<String>>,
        /// At or after.
        from: Query<Option<OffsetDateTime>>,
        /// Before.
        to: Query<Option<OffsetDateTime>>,
        /// The `next` of the previous page.
        before: Query<Option<i64>>,
        /// Page size, 1 to 200 (default 50).
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))]
        limit: Query<Option<i64>>,
    ) -> Result<
        Json<AuditPage>,
        Errors<{ BAD_REQUEST | UNPROCESSABLE | UNAUTHORIZED | FORBIDDEN | UNAVAILABLE }>,
    > {
        require_admin(&auth.0)?;
        let limit = limit.0.unwrap_or(DEFAULT_PAGE);
        let filter = AuditFilter {
            user_id: user_id.0,
            event_type: event_type.0,
            from: from.0,
            to: to.0,
        };
        let (found, more) = split_page(audit(&self.state.db, &filter, before.0, limit + 1).await?, limit);
        let next = found.last().filter(|_| more).map(|entry| entry.id);
        Ok(Json(AuditPage {
            entries: found.into_iter().map(AuditEntryView::from).collect(),
            next,
        }))
    }
}
