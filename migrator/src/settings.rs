//! The migrator's settings (`MIGRATOR_*`, plus `DATABASE_URL`).

use std::str::FromStr;
use std::time::Duration;

use auth_core::settings::{Environment, SettingsError, Validate};
use auth_core::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

/// The environment prefix of the migrator's settings.
pub const ENV_PREFIX: &str = "MIGRATOR_";

/// Settings read without the prefix.
pub const UNPREFIXED: &[&str] = &["DATABASE_URL"];

/// Everything the migrator can be configured with.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The PostgreSQL URL (a secret: it usually holds a password).
    pub database_url: SecretString,
    /// Production refuses `reset`.
    pub environment: Environment,
    /// How long to keep retrying a database that is not reachable yet.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long to wait for another migrator's lock before giving up.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// Where to serve `/metrics` and health while running; none by default (a Job rarely needs it).
    pub admin_listen: Option<String>,
    /// `json` or `human`.
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter.
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: SecretString::from("postgres://localhost:5432/auth"),
            environment: Environment::Development,
            connect_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(300),
            admin_listen: None,
            log_format: LogFormat::Json,
            log_level: "info,sqlx=warn".to_owned(),
        }
    }
}

impl Settings {
    /// The parsed connection options.
    pub fn connect_options(&self) -> Result<PgConnectOptions, SettingsError> {
        // The parser's message never echoes the URL, so no password reaches the output.
        PgConnectOptions::from_str(self.database_url.expose_secret()).map_err(|error| {
            SettingsError::new("DATABASE_URL", format!("not a valid PostgreSQL URL: {error}"))
        })
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.connect_options()?;
        if !auth_core::telemetry::is_valid_filter(&self.log_level) {
            return Err(SettingsError::new("MIGRATOR_LOG_LEVEL", "not a valid log filter"));
        }
        if self.connect_timeout.is_zero() {
            return Err(SettingsError::new(
                "MIGRATOR_CONNECT_TIMEOUT",
                "must be more than zero",
            ));
        }
        Ok(())
    }
}
