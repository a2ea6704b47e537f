//! Building the verifier from its settings and running it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use auth_core::http::RequestId;
use auth_core::listener::{self, BoundListener};
use auth_core::metrics::register_computed_gauge;
use auth_core::readiness::{Latch, Readiness};
use auth_core::revocation::epoch::EpochCheck;
use auth_core::revocation::{FollowerStatus, IndexCheck, RedisKeys, RevocationIndex, StreamFollower};
use auth_core::server::{ConnectionLimits, ListenerMetrics};
use auth_core::shutdown::{self, Shutdown};
use auth_core::token::{TokenValidator, ValidatorSettings};
use poem::{Endpoint, EndpointExt, IntoEndpoint, Response};

use crate::cache::TokenCache;
use crate::gate::{Gate, Revocations};
use crate::http_client::http_client;
use crate::keys::{KeySource, KeyStore};
use crate::metrics::VerifierMetrics;
use crate::proxy::Proxy;
use crate::rules::Rules;
use crate::settings::{RevocationMode, Settings};

/// A verifier whose listeners are bound, ready to run.
pub struct Verifier {
    public: BoundListener,
    admin: BoundListener,
    registry: prometheus::Registry,
    readiness: Readiness,
    app: poem::endpoint::BoxEndpoint<'static, Response>,
    keys: Arc<KeyStore>,
    keys_loaded: Latch,
    follower: Option<StreamFollower>,
    refresh_interval: Duration,
    connections: ConnectionLimits,
    fds: u64,
    // A proxied request holds a second descriptor, towards the app.
    fds_per_connection: usize,
    shutdown_grace: Duration,
}

impl Verifier {
    /// Creates the key store, the revocation check and the app, and binds both listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let registry = auth_core::metrics::new_registry("verifier");
        let metrics = VerifierMetrics::register(&registry)?;
        let readiness = Readiness::default();
        let client = http_client(auth_core::tls::client_config(settings.ca_path.as_deref(), None)?);

        let source = match (&settings.jwks_url, &settings.jwks_path) {
            (Some(url), _) => KeySource::Url {
                client: Box::new(client.clone()),
                uri: url.parse().context("VERIFIER_JWKS_URL")?,
                timeout: settings.jwks_timeout,
            },
            (None, Some(path)) => KeySource::File(path.clone()),
            (None, None) => anyhow::bail!("no key source"),
        };
        let keys = Arc::new(KeyStore::new(
            source,
            settings.jwks_refetch_cooldown,
            metrics.key_fetch_failures.clone(),
        ));
        let keys_loaded = readiness.latch("keys");

        let redis_keys = RedisKeys::new(&settings.redis_namespace);
        let (revocations, follower) = match settings.revocation_mode {
            RevocationMode::Index => {
                let index = Arc::new(RevocationIndex::default());
                let status = Arc::new(FollowerStatus::default());
                let follower = StreamFollower::new(
                    settings.redis_source()?,
                    redis_keys,
                    index.clone(),
                    status.clone(),
                );
                readiness.add_check(IndexCheck {
                    status: status.clone(),
                    grace: settings.redis_grace,
                });
                register_index_gauges(&registry, &index, &status)?;
                (
                    Revocations::Index {
                        index,
                        status,
                        grace: settings.redis_grace,
                    },
                    Some(follower),
                )
            }
            RevocationMode::Lookup => {
                let redis = auth_core::redis::pool(&settings.redis_source()?, 16, settings.redis_timeout)
                    .context("cannot create the Redis pool")?;
                readiness.add_check(EpochCheck {
                    redis: redis.clone(),
                    keys: redis_keys.clone(),
                });
                (
                    Revocations::Lookup {
                        redis,
                        keys: redis_keys,
                    },
                    None,
                )
            }
        };
        if settings.fail_open {
            tracing::warn!(
                "VERIFIER_FAIL_OPEN is set: valid tokens are ACCEPTED when revocations cannot be checked"
            );
        }

        let leeway = i64::try_from(settings.leeway.as_secs()).unwrap_or(i64::MAX);
        let gate = Arc::new(Gate {
            validator: TokenValidator::new(ValidatorSettings {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway: settings.leeway,
                max_lifetime: settings.max_token_lifetime,
            }),
            keys: keys.clone(),
            cache: TokenCache::new(settings.cache_size, leeway),
            revocations,
            rules: Rules::new(
                &settings.public_paths,
                &settings.rules,
                settings.case_sensitive_paths,
            )
            .map_err(anyhow::Error::msg)?,
            body_method_overrides: settings.body_method_overrides,
            token_cookie: settings.token_cookie.clone(),
            fail_open: settings.fail_open,
            metrics,
        });
        register_gate_gauges(&registry, &gate)?;

        let app = match &settings.upstream {
            Some(upstream) => with_access_log(Proxy::new(gate, client, upstream)?, settings.access_log),
            None => with_access_log(
                crate::forward_auth::routes(gate, settings.original_request),
                settings.access_log,
            ),
        };

        let public = listener::bind("public", &settings.listen).await?;
        let admin = listener::bind("admin", &settings.admin_listen).await?;
        Ok(Self {
            public,
            admin,
            registry,
            readiness,
            app,
            keys,
            keys_loaded,
            follower,
            refresh_interval: settings.jwks_refresh_interval,
            connections: settings.connections.clone(),
            fds: auth_core::server::raise_fd_limit(),
            fds_per_connection: if settings.upstream.is_some() { 2 } else { 1 },
            shutdown_grace: settings.shutdown_grace,
        })
    }

    /// The public listener's address (useful with port 0).
    pub fn public_addr(&self) -> SocketAddr {
        self.public.local_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr
    }

    /// Serves until `shutdown` fires, then stops reporting ready and drains within the grace.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(public = %self.public.local_addr, admin = %self.admin.local_addr, "token-verifier started");
        self.keys
            .clone()
            .spawn_refresh(self.refresh_interval, self.keys_loaded, shutdown.clone());
        if let Some(follower) = self.follower {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { follower.run(shutdown).await });
        }
        let readiness = self.readiness.clone();
        let draining = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                readiness.set_draining();
            }
        };
        let [public_connections, admin_connections] =
            ListenerMetrics::register(&self.registry, ["public", "admin"])?;
        let public = auth_core::server::serve(
            self.public.listener,
            self.app,
            self.connections.within_fds(self.fds, self.fds_per_connection),
            public_connections,
            draining,
            Some(self.shutdown_grace),
        );
        let admin = auth_core::admin::serve(
            self.admin,
            self.registry,
            self.readiness,
            (admin_connections, self.fds),
            shutdown,
        );
        tokio::try_join!(public, admin)?;
        Ok(())
    }

    /// Runs until SIGTERM or Ctrl-C.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        let (trigger, shutdown) = shutdown::channel();
        trigger.on_signals();
        self.run(shutdown).await
    }
}

/// The access log only when asked for. Request counts and latencies come from the decision
/// metrics, which need no per-request label lookups on this hot path.
fn with_access_log(
    app: impl IntoEndpoint<Endpoint: Endpoint<Output = Response> + 'static>,
    access_log: bool,
) -> poem::endpoint::BoxEndpoint<'static, Response> {
    let app = app.into_endpoint();
    if access_log {
        app.with(RequestId).boxed()
    } else {
        app.map_to_response().boxed()
    }
}

fn register_index_gauges(
    registry: &prometheus::Registry,
    index: &Arc<RevocationIndex>,
    status: &Arc<FollowerStatus>,
) -> prometheus::Result<()> {
    let entries = index.clone();
    register_computed_gauge(
        registry,
        "revocation_index_entries",
        "Revocations in the in-memory index",
        move || entries.len() as f64,
    )?;
    let lag = status.clone();
    register_computed_gauge(
        registry,
        "revocation_index_lag_seconds",
        "Time since the index last heard from the revocation stream",
        move || lag.lag().as_secs_f64().min(1e9),
    )?;
    let loads = status.clone();
    register_computed_gauge(
        registry,
        "revocation_index_loads",
        "Full loads of the revocation stream",
        move || loads.loads() as f64,
    )
}

fn register_gate_gauges(registry: &prometheus::Registry, gate: &Arc<Gate>) -> prometheus::Result<()> {
    let keys = gate.keys.clone();
    register_computed_gauge(
        registry,
        "keys_age_seconds",
        "Time since the keys were last loaded",
        move || keys.age().map_or(f64::NAN, |age| age as f64),
    )?;
    let count = gate.keys.clone();
    register_computed_gauge(registry, "keys", "Trusted signing keys", move || {
        count.keys().set.len() as f64
    })?;
    let cache = gate.clone();
    register_computed_gauge(
        registry,
        "token_cache_entries",
        "Verified tokens cached",
        move || cache.cache.len() as f64,
    )
}
