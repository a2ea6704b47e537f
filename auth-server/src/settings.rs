//! The server's settings (`AUTH_*`, plus `DATABASE_URL` and `REDIS_URL`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use auth_core::redis::RedisSource;
use auth_core::server::ConnectionLimits;
use auth_core::settings::{Environment, SettingsError, Validate};
use auth_core::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;

use crate::rate_limit::RateLimit;

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
    /// The `iss` of every token, and the base of the discovery URLs.
    pub issuer: String,
    /// The `aud` of every token.
    pub audience: String,
    /// A directory of PEM private keys; without it (outside production) an ephemeral key is used.
    pub keys_dir: Option<PathBuf>,
    /// The key that signs (file stem or `kid`); by default the file whose name sorts last.
    pub active_key: Option<String>,
    /// Registration answers 202 for a new and a taken address alike (the owner of a taken one is
    /// mailed a notice) instead of 201 / 409; a new account is then not logged in.
    pub enumeration_safe_registration: bool,
    /// Logins need a verified address (403 `email-not-verified` after the right password), and
    /// registration starts no session.
    pub require_verified_email: bool,
    /// CORS for browser clients on other origins.
    pub cors: crate::api::browser::CorsSettings,
    /// The periodic deletion of dead rows.
    pub cleanup: crate::service::cleanup::CleanupSettings,
    /// The first administrator, made at start while there is none.
    pub admin_bootstrap: crate::service::admin::BootstrapSettings,
    /// Mail: SMTP, links, token lifetimes.
    pub mail: crate::mail::MailSettings,
    /// Kubernetes mode: signing keys in a Secret, the sidecar injection webhook.
    pub kubernetes: crate::cluster::KubernetesSettings,
    /// The algorithm of the ephemeral key: `RS256`, `ES256` or `EdDSA`.
    pub ephemeral_key_algorithm: String,
    /// Lifetime of an access token.
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Sliding lifetime of a session's refresh token (extended on every refresh).
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// Absolute lifetime of a session, however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub session_max_lifetime: Duration,
    /// Lifetime of the Redis session mirror (refreshed on every use).
    #[serde(with = "humantime_serde")]
    pub session_cache_ttl: Duration,
    /// How long a just-rotated refresh token may be presented again for the same result.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub token_leeway: Duration,
    /// How the refresh token is handed out: `body`, `cookie` or `both`.
    pub refresh_token_delivery: RefreshDelivery,
    /// bcrypt cost factor.
    pub bcrypt_cost: u32,
    /// Hashes computed at once (0: one per CPU).
    pub hash_concurrency: usize,
    /// Hash requests allowed to wait; beyond it the server answers 503 with `Retry-After`.
    pub hash_queue_limit: usize,
    /// The longest a hash request may wait for its turn; one expected to wait longer is refused
    /// at once, and one still waiting at the deadline is dropped unhashed.
    #[serde(with = "humantime_serde")]
    pub hash_max_wait: Duration,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Connection limits of the public listener.
    pub connections: ConnectionLimits,
    /// Proxies in front of the server whose `X-Forwarded-For` entries are trusted (0: none).
    pub trusted_proxy_hops: usize,
    /// The Redis key namespace.
    pub redis_namespace: String,
    /// How often every unexpired revocation's key is checked in Redis (and republished if missing).
    #[serde(with = "humantime_serde")]
    pub revocation_resync_interval: Duration,
    /// How often the snapshot sidecars start from is rewritten (zero: never; they read the whole
    /// stream then).
    #[serde(with = "humantime_serde")]
    pub revocation_snapshot_interval: Duration,
    /// How often Redis is checked for lost revocation state (missing epoch, another process).
    #[serde(with = "humantime_serde")]
    pub revocation_watch_interval: Duration,
    /// Rate limits (`attempts/window`, or `off`).
    pub rate_limits: RateLimits,
    /// How failed logins lock an account (for logins from unknown sources).
    pub lockout: LockoutSettings,
    /// How long a device or address an account logged in from stays known to it.
    #[serde(with = "humantime_serde")]
    pub known_source_window: Duration,
    /// The PostgreSQL URL.
    pub database_url: SecretString,
    /// Most connections the database pool opens.
    pub database_max_connections: u32,
    /// The Redis URL (`rediss://` for TLS; `user:password@` for an ACL user).
    pub redis_url: SecretString,
    /// TLS to Redis: CA and client certificate files (`AUTH_REDIS_TLS__CA_PATH`, …).
    pub redis_tls: auth_core::redis::RedisTls,
    /// Redis Sentinel addresses (`host:port`, or `redis[s]://` URLs with the sentinels' password);
    /// when given, the Redis URL's host is the master's name and the primary is asked for on every
    /// new connection, so a failover is followed.
    #[serde(deserialize_with = "auth_core::settings::list_or_comma_separated")]
    pub redis_sentinels: Vec<String>,
    /// Most connections the Redis pool opens.
    pub redis_max_connections: u32,
    /// Redis replicas that must hold a revocation before it is acknowledged (`WAIT`; 0: the
    /// primary's write is enough). With Sentinel, 1 makes a failover unable to lose one.
    pub redis_wait_replicas: u32,
    /// How long a revocation waits for those replicas (it is committed either way).
    #[serde(with = "humantime_serde")]
    pub redis_wait_timeout: Duration,
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

/// Where refresh tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefreshDelivery {
    /// In the JSON body only.
    Body,
    /// In an httpOnly cookie only (browsers; JavaScript never sees it).
    Cookie,
    /// Both.
    Both,
}

/// The rate limits, per scope.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RateLimits {
    /// Login attempts per client address.
    pub login_per_ip: RateLimit,
    /// Login attempts per account identifier (email or username).
    pub login_per_account: RateLimit,
    /// Registrations per client address.
    pub register_per_ip: RateLimit,
    /// Refreshes per client address.
    pub refresh_per_ip: RateLimit,
    /// Password confirmations (change-password, account deletion) per account, so a stolen access
    /// token is no guessing oracle.
    pub password_check_per_user: RateLimit,
    /// Forgot-password and resend-verification requests per client address.
    pub mail_requests_per_ip: RateLimit,
    /// The same requests per address asked about (each kind separately).
    pub mail_requests_per_address: RateLimit,
    /// Reset and verification tokens presented per client address.
    pub token_redeems_per_ip: RateLimit,
}

/// The account lockout.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LockoutSettings {
    /// Consecutive failed logins that lock the account (0: never).
    pub threshold: u32,
    /// The first lock; each failure after it doubles the next.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The longest lock.
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        Self {
            threshold: 5,
            duration: Duration::from_secs(60),
            max_duration: Duration::from_secs(3600),
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_per_ip: RateLimit::per(30, Duration::from_secs(60)),
            login_per_account: RateLimit::per(10, Duration::from_secs(60)),
            register_per_ip: RateLimit::per(10, Duration::from_secs(3600)),
            refresh_per_ip: RateLimit::per(120, Duration::from_secs(60)),
            password_check_per_user: RateLimit::per(5, Duration::from_secs(900)),
            mail_requests_per_ip: RateLimit::per(20, Duration::from_secs(3600)),
            mail_requests_per_address: RateLimit::per(3, Duration::from_secs(3600)),
            token_redeems_per_ip: RateLimit::per(30, Duration::from_secs(3600)),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".to_owned(),
            admin_listen: "0.0.0.0:9090".to_owned(),
            issuer: "http://localhost:8080".to_owned(),
            audience: "auth-platform".to_owned(),
            keys_dir: None,
            active_key: None,
            kubernetes: crate::cluster::KubernetesSettings::default(),
            mail: crate::mail::MailSettings::default(),
            cleanup: crate::service::cleanup::CleanupSettings::default(),
            admin_bootstrap: crate::service::admin::BootstrapSettings::default(),
            cors: crate::api::browser::CorsSettings::default(),
            enumeration_safe_registration: false,
            require_verified_email: false,
            ephemeral_key_algorithm: "RS256".to_owned(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_lifetime: Duration::from_secs(90 * 24 * 3600),
            session_cache_ttl: Duration::from_secs(24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            token_leeway: Duration::from_secs(30),
            refresh_token_delivery: RefreshDelivery::Body,
            bcrypt_cost: 12,
            hash_concurrency: 0,
            hash_queue_limit: 256,
            hash_max_wait: Duration::from_secs(3),
            max_body_bytes: 64 * 1024,
            connections: ConnectionLimits::default(),
            trusted_proxy_hops: 0,
            redis_namespace: "auth".to_owned(),
            revocation_resync_interval: Duration::from_secs(60),
            revocation_snapshot_interval: Duration::from_secs(10),
            revocation_watch_interval: Duration::from_millis(250),
            rate_limits: RateLimits::default(),
            lockout: LockoutSettings::default(),
            known_source_window: Duration::from_secs(90 * 86_400),
            database_url: SecretString::from("postgres://localhost:5432/auth"),
            database_max_connections: 20,
            redis_url: SecretString::from("redis://127.0.0.1:6379"),
            redis_tls: auth_core::redis::RedisTls::default(),
            redis_sentinels: Vec::new(),
            redis_max_connections: 16,
            redis_wait_replicas: 0,
            redis_wait_timeout: Duration::from_millis(200),
            dependency_timeout: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(10),
            environment: Environment::Development,
            log_format: LogFormat::Json,
            log_level: "info,sqlx=warn".to_owned(),
        }
    }
}

impl Settings {
    /// Where these settings say Redis is.
    pub fn redis_source(&self) -> Result<RedisSource, SettingsError> {
        RedisSource::from_settings(
            "AUTH_",
            self.redis_url.expose_secret(),
            &self.redis_tls,
            &self.redis_sentinels,
        )
    }

    /// The replica acknowledgement revocations wait for, counting its outcomes in `outcomes`.
    pub fn replica_acks(&self, outcomes: prometheus::IntCounterVec) -> crate::service::revoker::ReplicaAcks {
        crate::service::revoker::ReplicaAcks {
            replicas: self.redis_wait_replicas,
            timeout: self.redis_wait_timeout,
            outcomes,
        }
    }

    /// The parsed database connection options.
    pub fn database_options(&self) -> Result<PgConnectOptions, SettingsError> {
        PgConnectOptions::from_str(self.database_url.expose_secret()).map_err(|error| {
            SettingsError::new("DATABASE_URL", format!("not a valid PostgreSQL URL: {error}"))
        })
    }

    /// Hashes computed at once: the setting, or one per CPU.
    pub fn effective_hash_concurrency(&self) -> usize {
        match self.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The longest a revocation can matter: an access token's lifetime plus the leeway.
    pub fn revocation_retention(&self) -> Duration {
        self.access_token_ttl + self.token_leeway
    }
}

fn positive(name: &str, duration: Duration) -> Result<(), SettingsError> {
    if duration.is_zero() {
        return Err(SettingsError::new(name, "must be more than zero"));
    }
    Ok(())
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.database_options()?;
        self.redis_source()?;
        for (name, addr) in [
            ("AUTH_LISTEN", &self.listen),
            ("AUTH_ADMIN_LISTEN", &self.admin_listen),
        ] {
            if std::net::SocketAddr::from_str(addr).is_err() {
                return Err(SettingsError::new(name, "expected an address like 0.0.0.0:8080"));
            }
        }
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return Err(SettingsError::new("AUTH_ISSUER", "must be an http(s) URL"));
        }
        if self.audience.is_empty() {
            return Err(SettingsError::new("AUTH_AUDIENCE", "must not be empty"));
        }
        if let Some((name, problem)) = self.admin_bootstrap.problem() {
            return Err(SettingsError::new(name, problem));
        }
        match (self.kubernetes.enabled, &self.keys_dir) {
            (true, Some(_)) => {
                return Err(SettingsError::new(
                    "AUTH_KEYS_DIR",
                    "must not be set with AUTH_KUBERNETES__ENABLED (the keys live in a Secret then)",
                ));
            }
            (false, None) if self.environment == Environment::Production => {
                return Err(SettingsError::new(
                    "AUTH_KEYS_DIR",
                    "is required in production unless AUTH_KUBERNETES__ENABLED (ephemeral keys would change on every restart)",
                ));
            }
            (true, None) => self.kubernetes.validate()?,
            (false, _) if self.kubernetes.webhook.listen.is_some() => {
                return Err(SettingsError::new(
                    "AUTH_KUBERNETES__WEBHOOK__LISTEN",
                    "needs AUTH_KUBERNETES__ENABLED",
                ));
            }
            (false, _) => {}
        }
        self.mail.validate(self.environment)?;
        positive("AUTH_CLEANUP__INTERVAL", self.cleanup.interval)?;
        if let Some(problem) = self.cors.problem() {
            return Err(SettingsError::new("AUTH_CORS__ALLOWED_ORIGINS", problem));
        }
        if self.cleanup.batch < 1 {
            return Err(SettingsError::new("AUTH_CLEANUP__BATCH", "must be at least 1"));
        }
        crate::keys::parse_algorithm(&self.ephemeral_key_algorithm)
            .map_err(|problem| SettingsError::new("AUTH_EPHEMERAL_KEY_ALGORITHM", problem))?;
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(SettingsError::new("AUTH_BCRYPT_COST", "must be between 4 and 31"));
        }
        positive("AUTH_ACCESS_TOKEN_TTL", self.access_token_ttl)?;
        positive("AUTH_REFRESH_TOKEN_TTL", self.refresh_token_ttl)?;
        positive("AUTH_SESSION_CACHE_TTL", self.session_cache_ttl)?;
        positive("AUTH_KNOWN_SOURCE_WINDOW", self.known_source_window)?;
        positive("AUTH_HASH_MAX_WAIT", self.hash_max_wait)?;
        if let Some(problem) = self.connections.problem() {
            return Err(SettingsError::new("AUTH_CONNECTIONS", problem));
        }
        if self.lockout.threshold > 0 {
            positive("AUTH_LOCKOUT__DURATION", self.lockout.duration)?;
            if self.lockout.max_duration < self.lockout.duration {
                return Err(SettingsError::new(
                    "AUTH_LOCKOUT__MAX_DURATION",
                    "must be at least AUTH_LOCKOUT__DURATION",
                ));
            }
        }
        positive("AUTH_REVOCATION_RESYNC_INTERVAL", self.revocation_resync_interval)?;
        positive("AUTH_REVOCATION_WATCH_INTERVAL", self.revocation_watch_interval)?;
        if self.session_max_lifetime < self.refresh_token_ttl {
            return Err(SettingsError::new(
                "AUTH_SESSION_MAX_LIFETIME",
                "must be at least AUTH_REFRESH_TOKEN_TTL",
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(SettingsError::new("AUTH_MAX_BODY_BYTES", "must be at least 1024"));
        }
        if self.database_max_connections == 0 {
            return Err(SettingsError::new(
                "AUTH_DATABASE_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        // The wait holds up the other requests sharing its multiplexed connection, and redis-rs
        // gives up on any reply after 500 ms.
        if self.redis_wait_replicas > 0
            && (self.redis_wait_timeout.is_zero() || self.redis_wait_timeout > Duration::from_millis(400))
        {
            return Err(SettingsError::new(
                "AUTH_REDIS_WAIT_TIMEOUT",
                "between 1ms and 400ms when AUTH_REDIS_WAIT_REPLICAS is set",
            ));
        }
        if self.redis_max_connections == 0 {
            return Err(SettingsError::new(
                "AUTH_REDIS_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        if self.redis_namespace.is_empty() || self.redis_namespace.contains(':') {
            return Err(SettingsError::new(
                "AUTH_REDIS_NAMESPACE",
                "must be non-empty without ':'",
            ));
        }
        if !auth_core::telemetry::is_valid_filter(&self.log_level) {
            return Err(SettingsError::new("AUTH_LOG_LEVEL", "not a valid log filter"));
        }
        Ok(())
    }
}
