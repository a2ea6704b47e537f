//! The verifier's settings (`VERIFIER_*`, plus `REDIS_URL`).

use std::str::FromStr;
use std::time::Duration;

use auth_core::settings::{Environment, SettingsError, Validate};
use auth_core::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The environment prefix of the verifier's settings.
pub const ENV_PREFIX: &str = "VERIFIER_";

/// Settings read without the prefix.
pub const UNPREFIXED: &[&str] = &["REDIS_URL"];

/// Everything the verifier can be configured with.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the forward-auth endpoint (or the proxy) listens.
    pub listen: String,
    /// Where `/metrics` and the health probes listen.
    pub admin_listen: String,
    /// The Redis URL holding the revocation stream.
    pub redis_url: SecretString,
    /// How long a Redis operation may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
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
            listen: "0.0.0.0:8181".to_owned(),
            admin_listen: "0.0.0.0:9191".to_owned(),
            redis_url: SecretString::from("redis://127.0.0.1:6379"),
            redis_timeout: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            environment: Environment::Development,
            log_format: LogFormat::Json,
            log_level: "info".to_owned(),
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        auth_core::redis::validate_url(self.redis_url.expose_secret())
            .map_err(|problem| SettingsError::new("REDIS_URL", problem))?;
        for (name, addr) in [
            ("VERIFIER_LISTEN", &self.listen),
            ("VERIFIER_ADMIN_LISTEN", &self.admin_listen),
        ] {
            if std::net::SocketAddr::from_str(addr).is_err() {
                return Err(SettingsError::new(
                    name,
                    "expected an address like 0.0.0.0:8181",
                ));
            }
        }
        if !auth_core::telemetry::is_valid_filter(&self.log_level) {
            return Err(SettingsError::new(
                "VERIFIER_LOG_LEVEL",
                "not a valid log filter",
            ));
        }
        Ok(())
    }
}
