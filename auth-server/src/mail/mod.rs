//! Mail: what the platform sends (password reset and address verification links), through a
//! durable outbox and SMTP.

pub mod messages;
pub mod outbox;
pub mod transport;

use std::path::PathBuf;
use std::time::Duration;

use auth_core::settings::{Environment, SettingsError};
use secrecy::SecretString;
use serde::Deserialize;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// STARTTLS, required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain text: a local relay or a test server only.
    None,
}

/// `AUTH_MAIL__*`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct MailSettings {
    /// Send no mail at all (a deployment without password reset by mail): requests are still
    /// answered the same, and the outbox rows are dropped unsent.
    pub disabled: bool,
    /// The SMTP server; without one (development only) mails are logged instead of sent.
    pub smtp_host: Option<String>,
    /// Its port.
    pub smtp_port: u16,
    /// How the connection is secured.
    pub smtp_security: SmtpSecurity,
    /// The SMTP user, if the server wants one.
    pub smtp_username: Option<String>,
    /// Its password (`AUTH_MAIL__SMTP_PASSWORD_FILE` for a mounted Secret).
    pub smtp_password: Option<SecretString>,
    /// A PEM CA bundle the SMTP server's certificate must chain to (default: the system's).
    pub smtp_ca_path: Option<PathBuf>,
    /// The sender, e.g. `Example <no-reply@example.com>`.
    pub from: String,
    /// The public base URL links point to (`{base}/reset-password?token=…`); never taken from a
    /// request's `Host`.
    pub link_base_url: String,
    /// How long a password reset link works.
    #[serde(with = "humantime_serde")]
    pub reset_token_ttl: Duration,
    /// How long an address verification link works.
    #[serde(with = "humantime_serde")]
    pub verification_token_ttl: Duration,
    /// A mail still unsent after this long is given up (its link would be stale anyway).
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    /// How often the outbox is looked at.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The longest one delivery may take.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            disabled: false,
            smtp_host: None,
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_username: None,
            smtp_password: None,
            smtp_ca_path: None,
            from: "Auth Platform <no-reply@localhost>".to_owned(),
            link_base_url: "http://localhost:8080".to_owned(),
            reset_token_ttl: Duration::from_secs(3600),
            verification_token_ttl: Duration::from_secs(24 * 3600),
            give_up_after: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            send_timeout: Duration::from_secs(10),
        }
    }
}

impl MailSettings {
    /// Refuses settings that cannot work, or are unsafe in production.
    pub fn validate(&self, environment: Environment) -> Result<(), SettingsError> {
        if environment == Environment::Production && !self.disabled {
            if self.smtp_host.is_none() {
                return Err(SettingsError::new(
                    "AUTH_MAIL__SMTP_HOST",
                    "is required in production (without it mails are only logged); or set AUTH_MAIL__DISABLED",
                ));
            }
            if self.smtp_security == SmtpSecurity::None {
                return Err(SettingsError::new(
                    "AUTH_MAIL__SMTP_SECURITY",
                    "must be starttls or tls in production",
                ));
            }
            if !self.link_base_url.starts_with("https://") {
                return Err(SettingsError::new(
                    "AUTH_MAIL__LINK_BASE_URL",
                    "must be an https URL in production",
                ));
            }
        }
        if !(self.link_base_url.starts_with("https://") || self.link_base_url.starts_with("http://")) {
            return Err(SettingsError::new(
                "AUTH_MAIL__LINK_BASE_URL",
                "must be an http(s) URL",
            ));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(SettingsError::new(
                "AUTH_MAIL__FROM",
                "expected an address like Example <no-reply@example.com>",
            ));
        }
        for (name, duration) in [
            ("AUTH_MAIL__RESET_TOKEN_TTL", self.reset_token_ttl),
            ("AUTH_MAIL__VERIFICATION_TOKEN_TTL", self.verification_token_ttl),
            ("AUTH_MAIL__POLL_INTERVAL", self.poll_interval),
            ("AUTH_MAIL__SEND_TIMEOUT", self.send_timeout),
        ] {
            if duration.is_zero() {
                return Err(SettingsError::new(name, "must be more than zero"));
            }
        }
        Ok(())
    }

    /// A link to `page` carrying `token`.
    pub fn link(&self, page: &str, token: &str) -> String {
        format!("{}?token={token}", self.page(page))
    }

    /// A link to `page`.
    pub fn page(&self, page: &str) -> String {
        format!("{}/{page}", self.link_base_url.trim_end_matches('/'))
    }
}
