//! Where the programs find Redis — one address, or the primary that Redis Sentinel names — and
//! the connection pool and readiness check built on it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bb8_redis::RedisConnectionManager;
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ClientTlsConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisError, RedisResult, TlsCertificates,
};
use serde::Deserialize;
use tokio_rustls::rustls::ClientConfig;

use crate::readiness::ReadinessCheck;
use crate::settings::SettingsError;

/// A pool of multiplexed Redis connections to the primary.
pub type RedisPool = bb8::Pool<RedisManager>;

// A sentinel or a candidate primary that does not answer within this is skipped.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether `url` is a usable Redis URL; the message never repeats the URL (it may hold a password).
fn validate_url(url: &str) -> Result<(), String> {
    url.into_connection_info().map(|_| ()).map_err(|_| {
        "not a valid Redis URL (expected redis[s]://[user:password@]host[:port][/db])".to_owned()
    })
}

/// Whether every Sentinel address is usable (`host:port`, or a `redis[s]://` URL that may carry
/// the sentinels' password); the message never repeats one.
fn validate_sentinels(addresses: &[String]) -> Result<(), String> {
    addresses
        .iter()
        .try_for_each(|address| sentinel_info(address).map(|_| ()))
}

fn sentinel_info(address: &str) -> Result<ConnectionInfo, String> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("redis://{address}")
    };
    url.into_connection_info().map_err(|_| {
        "not a valid Sentinel address (expected host:port or redis[s]://[:password@]host:port)".to_owned()
    })
}

/// TLS to Redis beyond what a `rediss://` URL says: the CA that signs the server's certificate
/// (instead of the system's roots) and a client certificate for `tls-auth-clients yes`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisTls {
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub ca_path: Option<PathBuf>,
    /// PEM file of this program's client certificate.
    pub client_cert_path: Option<PathBuf>,
    /// PEM file of its private key.
    pub client_key_path: Option<PathBuf>,
}

impl RedisTls {
    fn identity(&self) -> anyhow::Result<Option<(&Path, &Path)>> {
        match (&self.client_cert_path, &self.client_key_path) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("a client certificate needs both its certificate and its key file"),
        }
    }

    fn is_set(&self) -> bool {
        self.ca_path.is_some() || self.client_cert_path.is_some() || self.client_key_path.is_some()
    }
}

/// Where Redis is: the URL's address, or — given Sentinel addresses — the primary that the
/// sentinels name for the master called like the URL's host (`redis://:password@mymaster/0`), so
/// every new connection follows a failover. The URL's credentials, database and scheme apply to
/// the primary either way. Cheap to clone.
#[derive(Clone)]
pub struct RedisSource(Arc<Source>);

impl std::fmt::Debug for RedisSource {
    // Never the URL: it may hold a password.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("RedisSource")
            .field("sentinel", &self.is_sentinel())
            .field("tls", &self.0.tls.is_some())
            .finish_non_exhaustive()
    }
}

struct Source {
    // The URL's address, credentials and database (with Sentinel, only the last two are used).
    info: ConnectionInfo,
    certificates: Option<TlsCertificates>,
    // For connections made without redis-rs (the bulk stream reader); `None` for plain TCP.
    tls: Option<Arc<ClientConfig>>,
    target: Target,
}

enum Target {
    // One address: the one client (its certificates parsed once).
    Direct(redis::Client),
    // The primary the sentinels name.
    Sentinel(Sentinel),
}

struct Sentinel {
    master: String,
    sentinels: Vec<redis::Client>,
}

impl RedisSource {
    /// The source for `url` with `tls`, through `sentinels` (`host:port` or `redis[s]://` URLs, which
    /// may carry the sentinels' own password) when any is given. The files are read now, so a
    /// missing one fails the start; TLS files with a plain `redis://` URL are refused rather than
    /// silently unused.
    pub fn new(url: &str, tls: &RedisTls, sentinels: &[String]) -> anyhow::Result<Self> {
        let info = url
            .into_connection_info()
            .map_err(|_| anyhow::anyhow!("not a valid Redis URL"))?;
        let encrypted = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        anyhow::ensure!(
            encrypted || !tls.is_set(),
            "TLS files are set but the Redis URL is not rediss://"
        );
        let certificates = tls.is_set().then(|| certificates(tls)).transpose()?;
        let rustls = encrypted
            .then(|| crate::tls::client_config(tls.ca_path.as_deref(), tls.identity()?))
            .transpose()?
            .map(Arc::new);
        let target = match sentinels {
            [] => Target::Direct(client(info.clone(), certificates.as_ref())?),
            addresses => {
                let (ConnectionAddr::Tcp(master, _) | ConnectionAddr::TcpTls { host: master, .. }) =
                    info.addr()
                else {
                    anyhow::bail!("with Sentinel, the Redis URL's host names the master");
                };
                let sentinels = addresses
                    .iter()
                    .map(|address| {
                        let info = sentinel_info(address).map_err(anyhow::Error::msg)?;
                        let encrypted = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
                        client(info, certificates.as_ref().filter(|_| encrypted))
                    })
                    .collect::<anyhow::Result<_>>()?;
                Target::Sentinel(Sentinel {
                    master: master.clone(),
                    sentinels,
                })
            }
        };
        Ok(Self(Arc::new(Source {
            info,
            certificates,
            tls: rustls,
            target,
        })))
    }

    /// The source a program's settings describe (`REDIS_URL`, `{prefix}REDIS_SENTINELS`,
    /// `{prefix}REDIS_TLS__…`), a problem reported under the setting that has it.
    pub fn from_settings(
        prefix: &str,
        url: &str,
        tls: &RedisTls,
        sentinels: &[String],
    ) -> Result<Self, SettingsError> {
        validate_url(url).map_err(|problem| SettingsError::new("REDIS_URL", problem))?;
        validate_sentinels(sentinels)
            .map_err(|problem| SettingsError::new(&format!("{prefix}REDIS_SENTINELS"), problem))?;
        Self::new(url, tls, sentinels)
            .map_err(|error| SettingsError::new(&format!("{prefix}REDIS_TLS"), format!("{error:#}")))
    }

    /// Whether the primary is found through Sentinel.
    fn is_sentinel(&self) -> bool {
        matches!(self.0.target, Target::Sentinel(_))
    }

    /// The TLS configuration for connections made without redis-rs; `None` over plain TCP.
    pub fn rustls_config(&self) -> Option<Arc<ClientConfig>> {
        self.0.tls.clone()
    }

    /// The client for the primary: the URL's, or the one the first answering sentinel names now,
    /// once that server confirms it is the primary (a sentinel may lag behind a failover).
    pub async fn primary(&self) -> RedisResult<redis::Client> {
        let sentinel = match &self.0.target {
            Target::Direct(client) => return Ok(client.clone()),
            Target::Sentinel(sentinel) => sentinel,
        };
        let mut last_error = RedisError::from((ErrorKind::Io, "no sentinel answered"));
        for node in &sentinel.sentinels {
            match self.primary_named_by(node, &sentinel.master).await {
                Ok(primary) => return Ok(primary),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }

    async fn primary_named_by(&self, sentinel: &redis::Client, master: &str) -> RedisResult<redis::Client> {
        let mut conn = sentinel
            .get_multiplexed_async_connection_with_config(&short_config())
            .await?;
        let address: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut conn)
            .await?;
        let (host, port) = address
            .ok_or_else(|| RedisError::from((ErrorKind::Io, "the sentinel knows no master of that name")))?;
        let addr = match self.0.info.addr() {
            ConnectionAddr::TcpTls { insecure, .. } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: None,
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        let primary =
            client(self.0.info.clone().set_addr(addr), self.0.certificates.as_ref()).map_err(config_error)?;
        let mut conn = primary
            .get_multiplexed_async_connection_with_config(&short_config())
            .await?;
        if is_primary(&mut conn).await? {
            Ok(primary)
        } else {
            Err(RedisError::from((
                ErrorKind::Io,
                "the server a sentinel named is not the primary (yet)",
            )))
        }
    }
}

fn short_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SENTINEL_TIMEOUT))
        .set_response_timeout(Some(SENTINEL_TIMEOUT))
}

/// Whether the server on `conn` is a primary (`ROLE`), not a replica.
async fn is_primary(conn: &mut MultiplexedConnection) -> RedisResult<bool> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    Ok(matches!(
        role.first(),
        Some(redis::Value::BulkString(role)) if role == b"master"
    ))
}

fn config_error(error: anyhow::Error) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "bad Redis settings",
        format!("{error:#}"),
    ))
}

fn certificates(tls: &RedisTls) -> anyhow::Result<TlsCertificates> {
    Ok(TlsCertificates {
        client_tls: tls
            .identity()?
            .map(|(cert, key)| {
                anyhow::Ok(ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                })
            })
            .transpose()?,
        root_cert: tls.ca_path.as_deref().map(read).transpose()?,
    })
}

fn client(info: ConnectionInfo, certificates: Option<&TlsCertificates>) -> anyhow::Result<redis::Client> {
    Ok(match certificates {
        None => redis::Client::open(info)?,
        Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())?,
    })
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The pool's connection manager: bb8-redis's for one address; through Sentinel, one that asks
/// for the primary on every connect and, on checkout, drops a connection whose server is no
/// longer the primary (a failover demoted it).
pub enum RedisManager {
    /// One address.
    Direct(Box<RedisConnectionManager>),
    /// The primary Sentinel names.
    Sentinel(RedisSource),
}

impl bb8::ManageConnection for RedisManager {
    type Connection = MultiplexedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        match self {
            RedisManager::Direct(manager) => manager.connect().await,
            RedisManager::Sentinel(source) => {
                source.primary().await?.get_multiplexed_async_connection().await
            }
        }
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        match self {
            RedisManager::Direct(manager) => manager.is_valid(conn).await,
            RedisManager::Sentinel(_) if is_primary(conn).await? => Ok(()),
            RedisManager::Sentinel(_) => Err(RedisError::from((ErrorKind::Io, "no longer the primary"))),
        }
    }

    fn has_broken(&self, _: &mut Self::Connection) -> bool {
        false
    }
}

/// A pool that connects lazily, so a program can start (and report not ready) while Redis is down.
pub fn pool(source: &RedisSource, max_size: u32, timeout: Duration) -> RedisResult<RedisPool> {
    let manager = match &source.0.target {
        Target::Sentinel(_) => RedisManager::Sentinel(source.clone()),
        Target::Direct(client) => RedisManager::Direct(Box::new(RedisConnectionManager::new(
            client.get_connection_info().clone(),
        )?)),
    };
    Ok(bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(timeout)
        .build_unchecked(manager))
}

/// Readiness: Redis answers `PING`. When the pool has no connection to give at once, a direct
/// attempt runs beside it and, if it fails first, names the cause (the pool would only say that
/// it timed out): refused, a certificate that does not verify, a wrong password, no primary.
pub struct RedisCheck {
    /// The pool the program uses.
    pub pool: RedisPool,
    /// Where it connects.
    pub source: RedisSource,
}

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let failed = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let attempt = async {
                    self.source
                        .primary()
                        .await?
                        .get_multiplexed_async_connection()
                        .await
                };
                match attempt.await {
                    Err(cause) => cause.to_string(),
                    Ok(_) => std::future::pending().await,
                }
            };
            let mut conn = tokio::select! {
                pooled = self.pool.get() => pooled.map_err(|error| error.to_string())?,
                cause = failed => return Err(cause),
            };
            redis::cmd("PING")
                .query_async::<String>(&mut *conn)
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        })
    }
}
