//! The durable outbox: requests to mail someone, written in the caller's transaction and
//! delivered by a background worker, one row at a time under `FOR UPDATE SKIP LOCKED` (so any
//! number of replicas share the work and no mail goes out twice), retried with exponential
//! backoff while the mail server is down, given up after `give_up_after`.
//!
//! A row holds no secret. The single-use token a mail carries is made while the row is being
//! delivered, in a savepoint that is kept only if the mail went out; it voids the user's older
//! tokens of the same kind (a newer request replaces older ones).

use std::time::Duration;

use auth_core::shutdown::Shutdown;
use lettre::message::Message;
use prometheus::{IntCounterVec, IntGauge};
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::MailSettings;
use super::messages::Letter;
use super::transport::Mailer;
use crate::opaque_tokens::OpaqueToken;
use crate::store::ClientInfo;
use crate::store::audit::{AuditEvent, record};
use crate::store::single_use::{self, SingleUse};

/// What a row asks to send.
pub const PASSWORD_RESET: &str = "password_reset";
/// What a row asks to send.
pub const EMAIL_VERIFICATION: &str = "email_verification";
/// What a row asks to send: a notice that failed logins locked the account.
pub const ACCOUNT_LOCKED: &str = "account_locked";
/// What a row asks to send: a notice that someone tried to register the address again.
pub const REGISTRATION_ATTEMPT: &str = "registration_attempt";

/// The longest pause between two attempts at one mail.
const MAX_BACKOFF_SECS: i32 = 300;

/// How often one account gets the same notice at most: an attacker repeating what triggers it
/// (wrong passwords, registrations of the address) must not flood the owner's mailbox.
const NOTICE_QUIET_SECS: f64 = 3600.0;

/// Asks for a notice of `kind` to the account `user`, in the caller's transaction, unless one of
/// the same kind was asked for within the last hour.
pub async fn enqueue_notice(conn: &mut PgConnection, kind: &str, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO mail_outbox (kind, recipient) SELECT $1, u.email FROM users u \
         WHERE u.id = $2 AND u.deleted_at IS NULL AND NOT EXISTS ( \
           SELECT 1 FROM mail_outbox m WHERE m.kind = $1 AND lower(m.recipient) = lower(u.email) \
             AND m.created_at > now() - make_interval(secs => $3))",
    )
    .bind(kind)
    .bind(user)
    .bind(NOTICE_QUIET_SECS)
    .execute(conn)
    .await?;
    Ok(())
}

/// Asks for a mail of `kind` to `recipient`, in the caller's transaction.
pub async fn enqueue(
    executor: impl sqlx::PgExecutor<'_>,
    kind: &str,
    recipient: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO mail_outbox (kind, recipient) VALUES ($1, $2)")
        .bind(kind)
        .bind(recipient)
        .execute(executor)
        .await?;
    Ok(())
}

/// Delivers the outbox.
pub struct OutboxWorker {
    /// PostgreSQL.
    pub db: PgPool,
    /// Where mails go.
    pub mailer: Mailer,
    /// Links, lifetimes, timing.
    pub settings: MailSettings,
    /// Mails by kind and outcome (`sent`, `failed`, `skipped`, `expired`).
    pub outcomes: IntCounterVec,
    /// Mails waiting.
    pub depth: IntGauge,
}

/// One due row.
#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    kind: String,
    recipient: String,
    expired: bool,
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl OutboxWorker {
    /// The message a row asks for and the account it goes to, with its token stored when it
    /// carries one; `None` when there is nothing to send (no such account, or the address is
    /// verified already).
    async fn prepare(&self, conn: &mut PgConnection, row: &Due) -> anyhow::Result<Option<(Message, Uuid)>> {
        let user: Option<(Uuid, String, bool)> = sqlx::query_as(
            "SELECT id, email, email_verified FROM users WHERE lower(email) = lower($1) AND deleted_at IS NULL",
        )
        .bind(&row.recipient)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((user_id, email, verified)) = user else {
            return Ok(None);
        };
        let settings = &self.settings;
        // What to send: the letter, the page its link opens, and the single-use token it carries.
        let (letter, page, token) = match row.kind.as_str() {
            PASSWORD_RESET => (
                Letter {
                    subject: "Reset your password",
                    intro: "Someone, hopefully you, asked to reset the password of your account.",
                    action: "Choose a new password",
                    link: "",
                    valid_for: Some(settings.reset_token_ttl),
                    if_not_you: "If it was not you, ignore this mail: your password stays as it is.",
                },
                "reset-password",
                Some((SingleUse::PasswordReset, settings.reset_token_ttl)),
            ),
            EMAIL_VERIFICATION if !verified => (
                Letter {
                    subject: "Confirm your email address",
                    intro: "Please confirm that this address belongs to your new account.",
                    action: "Confirm the address",
                    link: "",
                    valid_for: Some(settings.verification_token_ttl),
                    if_not_you: "If you did not sign up, ignore this mail.",
                },
                "verify-email",
                Some((SingleUse::EmailVerification, settings.verification_token_ttl)),
            ),
            ACCOUNT_LOCKED => (
                Letter {
                    subject: "Your account is locked for a while",
                    intro: "After several wrong passwords in a row, logins to your account from new devices are held \
                            back for a while. Devices you logged in from before are not affected.",
                    action: "Reset your password",
                    link: "",
                    valid_for: None,
                    if_not_you: "If the attempts were not yours, someone may be guessing your password: choose a new one.",
                },
                "forgot-password",
                None,
            ),
            REGISTRATION_ATTEMPT => (
                Letter {
                    subject: "Someone tried to sign up with your address",
                    intro: "Someone tried to create an account with this address, which already has one. \
                            Nothing changed in your account.",
                    action: "Forgot your password? Reset it",
                    link: "",
                    valid_for: None,
                    if_not_you: "If it was not you, you can ignore this mail.",
                },
                "forgot-password",
                None,
            ),
            _ => return Ok(None),
        };
        let link = match token {
            Some((kind, lifetime)) => {
                // Committed on its own before the mail leaves: whoever follows the link the moment
                // it arrives must find the token. A send that fails leaves an unsent token behind,
                // voided by the next attempt's.
                let token = OpaqueToken::generate()?;
                let mut own = self.db.acquire().await?;
                single_use::issue(&mut own, kind, user_id, &email, &token.hash(), seconds(lifetime)).await?;
                settings.link(page, &token.encode())
            }
            None => settings.page(page),
        };
        let message = Letter {
            link: &link,
            ..letter
        }
        .message(&settings.from, &email)?;
        Ok(Some((message, user_id)))
    }

    async fn finish(conn: &mut PgConnection, id: Uuid, outcome: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE mail_outbox SET done_at = now(), outcome = $2, last_error = NULL WHERE id = $1")
            .bind(id)
            .bind(outcome)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Delivers one due mail; `false` when none is due.
    pub async fn deliver_next(&self) -> anyhow::Result<bool> {
        let mut tx = self.db.begin().await?;
        let due: Option<Due> = sqlx::query_as(
            "SELECT id, kind, recipient, created_at < now() - make_interval(secs => $1) AS expired \
             FROM mail_outbox WHERE done_at IS NULL AND next_attempt_at <= now() \
             ORDER BY next_attempt_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        )
        .bind(seconds(self.settings.give_up_after))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = due else {
            return Ok(false);
        };
        let outcome = if row.expired {
            Self::finish(&mut tx, row.id, "expired").await?;
            "expired"
        } else if matches!(self.mailer, Mailer::Disabled) {
            // No token is made for a mail that is never sent.
            Self::finish(&mut tx, row.id, "skipped").await?;
            "skipped"
        } else {
            match self.prepare(&mut tx, &row).await? {
                None => {
                    Self::finish(&mut tx, row.id, "skipped").await?;
                    "skipped"
                }
                Some((message, user)) => match self.mailer.send(message).await {
                    Ok(()) => {
                        Self::finish(&mut tx, row.id, "sent").await?;
                        // The request named only an address; this row says which account was
                        // mailed what, and when, for whoever asks "did my mail go out?".
                        record(
                            &mut *tx,
                            AuditEvent {
                                event_type: "mail_sent",
                                user_id: Some(user),
                                session_id: None,
                                client: &ClientInfo::default(),
                                data: json!({ "kind": row.kind }),
                            },
                        )
                        .await?;
                        "sent"
                    }
                    Err(error) => {
                        tracing::warn!(kind = %row.kind, %error, "a mail could not be sent; it will be retried");
                        sqlx::query(
                            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2, \
                             next_attempt_at = now() + make_interval(secs => LEAST(power(2, attempts), $3)) \
                             WHERE id = $1",
                        )
                        .bind(row.id)
                        .bind(&error)
                        .bind(f64::from(MAX_BACKOFF_SECS))
                        .execute(&mut *tx)
                        .await?;
                        "failed"
                    }
                },
            }
        };
        tx.commit().await?;
        self.outcomes
            .with_label_values(&[row.kind.as_str(), outcome])
            .inc();
        Ok(true)
    }

    async fn measure(&self) -> Result<(), sqlx::Error> {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM mail_outbox WHERE done_at IS NULL")
            .fetch_one(&self.db)
            .await?;
        self.depth.set(waiting);
        Ok(())
    }

    /// Delivers until shutdown.
    pub fn spawn(self, shutdown: Shutdown) {
        tokio::spawn(async move {
            loop {
                let round = async {
                    while self.deliver_next().await? {}
                    self.measure().await?;
                    anyhow::Ok(())
                };
                if let Err(error) = round.await {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "delivering the outbox failed; retrying"
                    );
                }
                tokio::select! {
                    () = tokio::time::sleep(self.settings.poll_interval) => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }
}
