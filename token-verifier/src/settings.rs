//! The verifier's settings (`VERIFIER_*`, plus `REDIS_URL`).

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use auth_core::redis::RedisSource;
use auth_core::server::ConnectionLimits;
use auth_core::settings::{Environment, SettingsError, Validate};
use auth_core::telemetry::LogFormat;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::original::OriginalRequest;
use crate::rules::Rules;

/// The environment prefix of the verifier's settings.
pub const ENV_PREFIX: &str = "VERIFIER_";

/// Settings read without the prefix.
pub const UNPREFIXED: &[&str] = &["REDIS_URL"];

/// How revocations are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationMode {
    /// An in-memory index following the revocation stream: no Redis round trip per request.
    Index,
    /// One Redis round trip (pipelined `GET`s) of the revocation keys per request.
    Lookup,
}

/// A per-route requirement: requests whose path starts with `path` (and whose method is one of
/// `methods`, if given) need a token carrying one of `roles`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct RouteRule {
    /// A path prefix.
    pub path: String,
    /// The methods the rule applies to; all when empty.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The roles allowed (any one of them suffices).
    pub roles: Vec<String>,
}

/// Everything the verifier can be configured with.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where the forward-auth endpoint (or the proxy) listens.
    pub listen: String,
    /// Where `/metrics` and the health probes listen.
    pub admin_listen: String,
    /// PEM CA certificates that `https://` key and upstream URLs are verified against (default:
    /// the system's roots).
    pub ca_path: Option<PathBuf>,
    /// With an upstream (`http://127.0.0.1:3000`) the verifier is a reverse proxy in front of it;
    /// without, it answers forward-auth requests on `/verify`.
    pub upstream: Option<String>,
    /// Path prefixes that need no token.
    pub public_paths: Vec<String>,
    /// Role requirements by path prefix; the longest matching prefix wins.
    pub rules: Vec<RouteRule>,
    /// Match paths case-sensitively (default: no, as case-insensitive routers would read them).
    pub case_sensitive_paths: bool,
    /// Assume the app may take a `POST`'s method from `_method` in a form or JSON body, so such a
    /// request must satisfy the rules of every method (default: yes).
    pub body_method_overrides: bool,
    /// Forward-auth: which proxy's description of the original request to trust.
    pub original_request: OriginalRequest,
    /// A cookie to read the token from when there is no `Authorization` header.
    pub token_cookie: Option<String>,
    /// The expected `iss`.
    pub issuer: String,
    /// The expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The longest lifetime (`exp - iat`) a token may claim, beyond the leeway: the issuer's
    /// access-token lifetime.
    #[serde(with = "humantime_serde")]
    pub max_token_lifetime: Duration,
    /// The auth server's JWKS (`http://auth-server/.well-known/jwks.json`).
    pub jwks_url: Option<String>,
    /// A mounted JWKS file instead of a URL (re-read when it changes).
    pub jwks_path: Option<PathBuf>,
    /// How often the keys are refreshed.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh_interval: Duration,
    /// The least time between two refetches triggered by an unknown `kid`.
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_cooldown: Duration,
    /// How long a key fetch may take.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// `index` (default) or `lookup`.
    pub revocation_mode: RevocationMode,
    /// The Redis URL holding the revocation stream and keys (`rediss://` for TLS).
    pub redis_url: SecretString,
    /// TLS to Redis: CA and client certificate files (`VERIFIER_REDIS_TLS__CA_PATH`, …).
    pub redis_tls: auth_core::redis::RedisTls,
    /// Redis Sentinel addresses (`host:port`, or `redis[s]://` URLs with the sentinels' password);
    /// when given, the Redis URL's host is the master's name and the primary is asked for on every
    /// new connection, so a failover is followed.
    #[serde(deserialize_with = "auth_core::settings::list_or_comma_separated")]
    pub redis_sentinels: Vec<String>,
    /// The Redis key namespace.
    pub redis_namespace: String,
    /// How long a Redis operation may take.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// How long the index may go without hearing from Redis before the revocation state counts as
    /// unknown.
    #[serde(with = "humantime_serde")]
    pub redis_grace: Duration,
    /// Accept valid tokens when the revocation state is unknown (default: refuse with 503).
    pub fail_open: bool,
    /// Verified tokens remembered (0 turns the cache off).
    pub cache_size: usize,
    /// Log every request (off by default: a sidecar sees every request of its app).
    pub access_log: bool,
    /// Connection limits of the forward-auth or proxy listener.
    pub connections: ConnectionLimits,
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
            upstream: None,
            ca_path: None,
            public_paths: Vec::new(),
            rules: Vec::new(),
            case_sensitive_paths: false,
            body_method_overrides: true,
            original_request: OriginalRequest::XOriginal,
            token_cookie: None,
            issuer: "http://localhost:8080".to_owned(),
            audience: "auth-platform".to_owned(),
            leeway: Duration::from_secs(30),
            max_token_lifetime: Duration::from_secs(15 * 60),
            jwks_url: None,
            jwks_path: None,
            jwks_refresh_interval: Duration::from_secs(300),
            jwks_refetch_cooldown: Duration::from_secs(1),
            jwks_timeout: Duration::from_secs(2),
            revocation_mode: RevocationMode::Index,
            redis_url: SecretString::from("redis://127.0.0.1:6379"),
            redis_tls: auth_core::redis::RedisTls::default(),
            redis_sentinels: Vec::new(),
            redis_namespace: "auth".to_owned(),
            redis_timeout: Duration::from_secs(1),
            redis_grace: Duration::from_secs(5),
            fail_open: false,
            cache_size: 10_000,
            access_log: false,
            connections: ConnectionLimits::default(),
            shutdown_grace: Duration::from_secs(5),
            environment: Environment::Development,
            log_format: LogFormat::Json,
            log_level: "info".to_owned(),
        }
    }
}

fn http_url(name: &str, url: &str) -> Result<(), SettingsError> {
    match url.parse::<hyper::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => Ok(()),
        _ => Err(SettingsError::new(name, "expected an http:// or https:// URL")),
    }
}

/// The public paths and role rules as the sidecar would use them, or the first problem.
fn check_routes(
    public_paths: &[String],
    rules: &[RouteRule],
    case_sensitive: bool,
) -> Result<(), SettingsError> {
    Rules::new(public_paths, rules, case_sensitive)
        .map_err(|problem| SettingsError::new("VERIFIER_RULES", problem))?;
    if rules.iter().any(|rule| rule.roles.is_empty()) {
        return Err(SettingsError::new(
            "VERIFIER_RULES",
            "every rule needs at least one role",
        ));
    }
    Ok(())
}

/// The settings that say which paths are public and which need a role.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RouteSettings {
    public_paths: Vec<String>,
    rules: Vec<RouteRule>,
    case_sensitive_paths: bool,
}

impl Validate for RouteSettings {
    fn validate(&self) -> Result<(), SettingsError> {
        check_routes(&self.public_paths, &self.rules, self.case_sensitive_paths)
    }
}

/// Reads and checks the route settings in `environment` (`VERIFIER_PUBLIC_PATHS`,
/// `VERIFIER_RULES`, `VERIFIER_CASE_SENSITIVE_PATHS`) exactly as a sidecar started with that
/// environment would, so whoever writes a sidecar's environment (the injection webhook) can refuse
/// what the sidecar would refuse to start with.
pub fn check_route_environment(environment: Vec<(String, String)>) -> Result<(), SettingsError> {
    let names = [
        "VERIFIER_PUBLIC_PATHS",
        "VERIFIER_RULES",
        "VERIFIER_CASE_SENSITIVE_PATHS",
    ];
    let environment = environment
        .into_iter()
        .filter(|(name, _)| names.contains(&name.as_str()));
    auth_core::settings::SettingsSource::new(ENV_PREFIX, UNPREFIXED)
        .with_environment(environment)
        .load::<RouteSettings>()
        .map(drop)
}

impl Settings {
    /// Where these settings say Redis is.
    pub fn redis_source(&self) -> Result<RedisSource, SettingsError> {
        RedisSource::from_settings(
            "VERIFIER_",
            self.redis_url.expose_secret(),
            &self.redis_tls,
            &self.redis_sentinels,
        )
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), SettingsError> {
        self.redis_source()?;
        for (name, addr) in [
            ("VERIFIER_LISTEN", &self.listen),
            ("VERIFIER_ADMIN_LISTEN", &self.admin_listen),
        ] {
            if std::net::SocketAddr::from_str(addr).is_err() {
                return Err(SettingsError::new(name, "expected an address like 0.0.0.0:8181"));
            }
        }
        match (&self.jwks_url, &self.jwks_path) {
            (Some(url), None) => http_url("VERIFIER_JWKS_URL", url)?,
            (None, Some(_)) => {}
            _ => {
                return Err(SettingsError::new(
                    "VERIFIER_JWKS_URL",
                    "set exactly one of VERIFIER_JWKS_URL and VERIFIER_JWKS_PATH",
                ));
            }
        }
        auth_core::tls::client_config(self.ca_path.as_deref(), None)
            .map_err(|error| SettingsError::new("VERIFIER_CA_PATH", format!("{error:#}")))?;
        if let Some(upstream) = &self.upstream {
            http_url("VERIFIER_UPSTREAM", upstream)?;
        }
        check_routes(&self.public_paths, &self.rules, self.case_sensitive_paths)?;
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(SettingsError::new(
                "VERIFIER_ISSUER",
                "issuer and audience must be set",
            ));
        }
        if let Some(problem) = self.connections.problem() {
            return Err(SettingsError::new("VERIFIER_CONNECTIONS", problem));
        }
        if self.jwks_refetch_cooldown > Duration::from_secs(5) {
            return Err(SettingsError::new(
                "VERIFIER_JWKS_REFETCH_COOLDOWN",
                "at most 5s: a request with an unknown kid may wait this long for the next fetch",
            ));
        }
        if self.jwks_refresh_interval.is_zero() {
            return Err(SettingsError::new(
                "VERIFIER_JWKS_REFRESH_INTERVAL",
                "must be more than zero",
            ));
        }
        if !auth_core::telemetry::is_valid_filter(&self.log_level) {
            return Err(SettingsError::new("VERIFIER_LOG_LEVEL", "not a valid log filter"));
        }
        Ok(())
    }
}
