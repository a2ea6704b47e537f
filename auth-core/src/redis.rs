//! The Redis connection pool both the server and the verifier use, and its readiness check.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use bb8_redis::RedisConnectionManager;
use futures_util::future::BoxFuture;
use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};
use serde::Deserialize;

use crate::readiness::ReadinessCheck;

/// A pool of multiplexed Redis connections.
pub type RedisPool = bb8::Pool<RedisConnectionManager>;

/// Whether `url` is a usable Redis URL; the message never repeats the URL (it may hold a password).
pub fn validate_url(url: &str) -> Result<(), String> {
    url.into_connection_info().map(|_| ()).map_err(|_| {
        "not a valid Redis URL (expected redis[s]://[user:password@]host[:port][/db])".to_owned()
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

/// The client for `url` with `tls`; the files are read now, so a missing one fails the start.
/// TLS settings with a plain `redis://` URL are refused rather than silently unused.
pub fn client(url: &str, tls: &RedisTls) -> anyhow::Result<redis::Client> {
    let info = url
        .into_connection_info()
        .map_err(|_| anyhow::anyhow!("not a valid Redis URL"))?;
    let client_tls = match (&tls.client_cert_path, &tls.client_key_path) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read(cert)?,
            client_key: read(key)?,
        }),
        (None, None) => None,
        _ => anyhow::bail!("a client certificate needs both its certificate and its key file"),
    };
    let root_cert = tls.ca_path.as_deref().map(read).transpose()?;
    if client_tls.is_none() && root_cert.is_none() {
        return Ok(redis::Client::open(info)?);
    }
    anyhow::ensure!(
        matches!(info.addr(), ConnectionAddr::TcpTls { .. }),
        "TLS files are set but the Redis URL is not rediss://"
    );
    Ok(redis::Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls,
            root_cert,
        },
    )?)
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// A pool that connects lazily, so a program can start (and report not ready) while Redis is down.
pub fn pool(
    client: &redis::Client,
    max_size: u32,
    timeout: Duration,
) -> Result<RedisPool, redis::RedisError> {
    let manager = RedisConnectionManager::new(client.get_connection_info().clone())?;
    Ok(bb8::Pool::builder()
        .max_size(max_size)
        .connection_timeout(timeout)
        .build_unchecked(manager))
}

/// Readiness: Redis answers `PING`. When the pool has no connection to give at once, a direct
/// attempt runs beside it and, if it fails first, names the cause (the pool would only say that
/// it timed out): refused, a certificate that does not verify, a wrong password.
pub struct RedisCheck {
    /// The pool the program uses.
    pub pool: RedisPool,
    /// The client it was built from.
    pub client: redis::Client,
}

impl ReadinessCheck for RedisCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let failed = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                match self.client.get_multiplexed_async_connection().await {
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
