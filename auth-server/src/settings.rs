//! The server's settings (`AUTH_*`, plus `DATABASE_URL` and `REDIS_URL`).

use std::str::FromStr;
use std::time::Duration;

use auth_core::settings::{Environment, SettingsError, Validate};
use auth_core::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

/// The environment prefix of the server's settings.
pub const ENV_PREFIX: &str = "AUTH_";

/// Settings read without the prefix.
pub const UNPREFIXED: &[&str] = &["DATABASE_URL", "REDIS_URL"];

/// Everything the server can be configured with.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the public API listens.
    pub listen: String,
    /// Where `/metrics` and the health probes listen.
    pub admin_listen: String,
    /// The PostgreSQL URL.
    pub database_url: SecretString,
    /// Most connections the database pool opens.
    pub database_max_connections: u32,
    /// The Redis URL.
    pub redis_url: SecretString,
    /// Most connections the Redis pool opens.
    pub redis_max_connections: u32,
    /// How long a request waits for a database or Redis connection before answering 503.
    #[serde(with = "humantime_serde")]
    pub dependency_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `production` turns on the strict checks.
    pub environment: Environment,
    /// `json` or `human`.
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter.
    pub log_level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".to_owned(),
            admin_listen: "0.0.0.0:9090".to_owned(),
            database_url: SecretString::from("postgres://localhost:5432/auth"),
            database_max_connections: 20,
            redis_url: SecretString::from("redis://127.0.0.1:6379"),
            redis_max_connections: 16,
            dependency_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            environment: Environment::Development,
            log_format: LogFormat::Json,
            log_level: "info,sqlx=warn".to_owned(),
        }
    }
}

impl Settings {
    /// The parsed database connection options.
    pub fn database_options(&self) -> Result<PgConnectOptions, SettingsError> {
        PgConnectOptions::from_str(self.database_url.expose_secret()).map_err(|error| {
            SettingsError::new(
                "DATABASE_URL",
                format!("not a valid PostgreSQL URL: {error}"),
            )
        })
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.database_options()?;
        auth_core::redis::validate_url(self.redis_url.expose_secret())
            .map_err(|problem| SettingsError::new("REDIS_URL", problem))?;
        for (name, addr) in [
            ("AUTH_LISTEN", &self.listen),
            ("AUTH_ADMIN_LISTEN", &self.admin_listen),
        ] {
            if std::net::SocketAddr::from_str(addr).is_err() {
                return Err(SettingsError::new(
                    name,
                    "expected an address like 0.0.0.0:8080",
                ));
            }
        }
        if self.database_max_connections == 0 {
            return Err(SettingsError::new(
                "AUTH_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.redis_max_connections == 0 {
            return Err(SettingsError::new(
                "AUTH_REDIS_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if !auth_core::telemetry::is_valid_filter(&self.log_level) {
            return Err(SettingsError::new(
                "AUTH_LOG_LEVEL",
                "not a valid log filter",
            ));
        }
        Ok(())
    }
}
