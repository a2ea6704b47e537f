//! Building the server from its settings and running it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use auth_core::http::{HttpMetrics, RequestId};
use auth_core::listener::{self, BoundListener};
use auth_core::readiness::{Latch, Readiness};
use auth_core::redis::RedisCheck;
use auth_core::revocation::{FollowerStatus, RedisKeys, RevocationIndex, StreamFollower};
use auth_core::server::{ConnectionLimits, ListenerMetrics};
use auth_core::settings::Environment;
use auth_core::shutdown::{self, Shutdown, ShutdownTrigger};
use auth_core::token::{TokenValidator, ValidatorSettings};
use poem::EndpointExt;

use crate::access_tokens::TokenIssuer;
use crate::cluster::webhook::WebhookSettings;
use crate::cluster::{self, Cluster};
use crate::database::{self, DatabaseCheck, SchemaCheck};
use crate::keys::{KeyRing, parse_algorithm};
use crate::mail::outbox::OutboxWorker;
use crate::mail::transport::Mailer;
use crate::metrics::{PoolCollector, ServerMetrics};
use crate::passwords::PasswordHasher;
use crate::rate_limit::RateLimiter;
use crate::service::cleanup::Cleanup;
use crate::service::revocation_guard::RevocationGuard;
use crate::service::revoker::Revoker;
use crate::settings::Settings;
use crate::state::{AppState, Lifetimes, SharedState};
use crate::store::users::Lockout;

/// A server whose listeners are bound and whose state is built, ready to run.
pub struct Application {
    public: BoundListener,
    admin: BoundListener,
    registry: prometheus::Registry,
    state: SharedState,
    restored: Latch,
    resync_interval: Duration,
    watch_interval: Duration,
    connections: ConnectionLimits,
    fds: u64,
    shutdown_grace: Duration,
    kubernetes: Option<Kubernetes>,
    outbox: OutboxWorker,
    cors: crate::api::browser::CorsSettings,
    snapshots: Option<StreamFollower>,
    // The first administrator to make, and the readiness it holds back until made.
    admin_bootstrap: Option<(crate::service::admin::BootstrapSettings, Latch)>,
}

/// Kubernetes mode's parts: the election and key schedule (running since `build`, stopped by
/// `stop`) and the webhook, if configured.
struct Kubernetes {
    cluster: Cluster,
    stop: ShutdownTrigger,
    webhook: Option<(BoundListener, WebhookSettings)>,
}

fn load_keys(settings: &Settings) -> anyhow::Result<KeyRing> {
    if let Some(dir) = &settings.keys_dir {
        return Ok(KeyRing::load(dir, settings.active_key.as_deref())?);
    }
    // Settings validation already refused this in production.
    assert_ne!(settings.environment, Environment::Production);
    let algorithm = parse_algorithm(&settings.ephemeral_key_algorithm).map_err(anyhow::Error::msg)?;
    tracing::warn!(
        "AUTH_KEYS_DIR is not set: signing with an EPHEMERAL key that changes on every restart; \
         every token becomes invalid when this process stops. Never run like this in production"
    );
    Ok(KeyRing::ephemeral(algorithm)?)
}

impl Application {
    /// Loads the keys, creates the (lazily connecting) pools and binds both listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let registry = auth_core::metrics::new_registry("auth_server");
        let metrics = ServerMetrics::register(&registry)?;
        let (keys, kubernetes) = match settings.kubernetes.enabled {
            true => {
                let (stop, cluster_shutdown) = shutdown::channel();
                let metrics = cluster::ClusterMetrics::register(&registry)?;
                let (cluster, keys) = cluster::start(
                    &settings.kubernetes,
                    settings.revocation_retention(),
                    metrics,
                    cluster_shutdown,
                )
                .await?;
                let webhook = match &settings.kubernetes.webhook.listen {
                    Some(address) => Some((
                        listener::bind("webhook", address).await?,
                        settings.kubernetes.webhook.clone(),
                    )),
                    None => None,
                };
                (
                    keys,
                    Some(Kubernetes {
                        cluster,
                        stop,
                        webhook,
                    }),
                )
            }
            false => {
                let ring = load_keys(&settings)?;
                tracing::info!(kid = %ring.signing_key().kid, published = ring.jwks().keys.len(), "signing keys loaded");
                (Arc::new(ArcSwap::from_pointee(ring)), None)
            }
        };
        let db = database::pool(
            settings.database_options()?,
            settings.database_max_connections,
            settings.dependency_timeout,
        );
        let redis_source = settings.redis_source()?;
        let redis = auth_core::redis::pool(
            &redis_source,
            settings.redis_max_connections,
            settings.dependency_timeout,
        )
        .context("cannot create the Redis pool")?;

        PoolCollector::register(
            &registry,
            db.clone(),
            redis.clone(),
            settings.redis_max_connections,
        )?;
        let hasher = {
            let (cost, concurrency, queue) = (
                settings.bcrypt_cost,
                settings.effective_hash_concurrency(),
                (settings.hash_queue_limit, settings.hash_max_wait),
            );
            let gauges = (metrics.hash_queue_depth.clone(), metrics.hash_jobs.clone());
            tokio::task::spawn_blocking(move || PasswordHasher::new(cost, concurrency, queue, gauges))
                .await??
        };

        let readiness = Readiness::default();
        readiness.add_check(DatabaseCheck(db.clone()));
        readiness.add_check(SchemaCheck(db.clone()));
        readiness.add_check(RedisCheck {
            pool: redis.clone(),
            source: redis_source.clone(),
        });
        let restored = readiness.latch("revocations_restored");
        let admin_bootstrap = settings.admin_bootstrap.email.is_some().then(|| {
            (
                settings.admin_bootstrap.clone(),
                readiness.latch("admin_bootstrap"),
            )
        });

        let redis_keys = RedisKeys::new(&settings.redis_namespace);
        // A follower of its own keeps the snapshot sidecars start from (one replica writes it).
        let snapshots = (!settings.revocation_snapshot_interval.is_zero()).then(|| {
            StreamFollower::new(
                redis_source,
                redis_keys.clone(),
                Arc::new(RevocationIndex::default()),
                Arc::new(FollowerStatus::default()),
            )
            .writing_snapshots(settings.revocation_snapshot_interval)
        });
        let cleanup = Cleanup {
            db: db.clone(),
            settings: settings.cleanup.clone(),
            known_source_window: settings.known_source_window,
            removed: metrics.cleanup_removed.clone(),
        };
        let state = Arc::new(AppState {
            issuer: TokenIssuer::new(
                keys.clone(),
                &settings.issuer,
                &settings.audience,
                settings.access_token_ttl,
            ),
            validator: TokenValidator::new(ValidatorSettings {
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway: settings.token_leeway,
                max_lifetime: settings.access_token_ttl,
            }),
            revoker: Revoker::new(
                db.clone(),
                redis.clone(),
                redis_keys.clone(),
                (settings.access_token_ttl, settings.token_leeway),
                metrics.revocations.clone(),
                settings.replica_acks(metrics.replica_waits.clone()),
            ),
            limiter: RateLimiter::new(redis.clone(), redis_keys.clone(), metrics.rate_limited.clone()),
            rate_limits: settings.rate_limits.clone(),
            lockout: Lockout {
                threshold: settings.lockout.threshold,
                duration: settings.lockout.duration,
                max_duration: settings.lockout.max_duration,
            },
            known_source_window: settings.known_source_window,
            lifetimes: Lifetimes {
                access: settings.access_token_ttl,
                refresh: settings.refresh_token_ttl,
                session_max: settings.session_max_lifetime,
                session_cache: settings.session_cache_ttl,
                reuse_grace: settings.refresh_reuse_grace,
            },
            refresh_delivery: settings.refresh_token_delivery,
            trusted_proxy_hops: settings.trusted_proxy_hops,
            db,
            redis,
            redis_keys,
            keys,
            hasher,
            metrics,
            readiness,
            max_body_bytes: settings.max_body_bytes,
            enumeration_safe_registration: settings.enumeration_safe_registration,
            require_verified_email: settings.require_verified_email,
            cleanup,
        });

        let outbox = OutboxWorker {
            db: state.db.clone(),
            mailer: Mailer::new(&settings.mail)?,
            settings: settings.mail.clone(),
            outcomes: state.metrics.mails.clone(),
            depth: state.metrics.mail_outbox_depth.clone(),
        };
        let public = listener::bind("public", &settings.listen).await?;
        let admin = listener::bind("admin", &settings.admin_listen).await?;
        Ok(Self {
            public,
            admin,
            registry,
            state,
            restored,
            resync_interval: settings.revocation_resync_interval,
            watch_interval: settings.revocation_watch_interval,
            connections: settings.connections.clone(),
            fds: auth_core::server::raise_fd_limit(),
            shutdown_grace: settings.shutdown_grace,
            kubernetes,
            outbox,
            cors: settings.cors.clone(),
            snapshots,
            admin_bootstrap,
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
        tracing::info!(public = %self.public.local_addr, admin = %self.admin.local_addr, "auth-server started");
        RevocationGuard {
            revoker: self.state.revoker.clone(),
            restored: self.restored,
            watch_interval: self.watch_interval,
            resync_interval: self.resync_interval,
            restores: self.state.metrics.revocation_restores.clone(),
            resyncs: self.state.metrics.revocation_resyncs.clone(),
        }
        .spawn(shutdown.clone());
        self.outbox.spawn(shutdown.clone());
        self.state.cleanup.clone().spawn(shutdown.clone());
        if let Some((bootstrap, done)) = self.admin_bootstrap {
            bootstrap.spawn(
                self.state.db.clone(),
                self.state.hasher.cost(),
                done,
                shutdown.clone(),
            );
        }
        if let Some(snapshots) = self.snapshots {
            tokio::spawn(snapshots.run(shutdown.clone()));
        }
        let document = crate::api::document(&self.state);
        let http_metrics =
            HttpMetrics::register(&self.registry)?.with_templates(crate::api::route_templates(&document));
        let body_limit = self.state.max_body_bytes;
        let app = crate::api::routes(self.state.clone(), &document, body_limit, &self.cors)
            .with(http_metrics)
            .with(RequestId);
        let readiness = self.state.readiness.clone();
        let draining = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                readiness.set_draining();
            }
        };
        let [public_connections, admin_connections, webhook_connections] =
            ListenerMetrics::register(&self.registry, ["public", "admin", "webhook"])?;
        let webhook_limits = (
            self.connections.clone().within_fds(self.fds, 1),
            webhook_connections,
        );
        let webhook_shutdown = shutdown.clone();
        let webhook = async move {
            let shutdown = webhook_shutdown;
            let Some(Kubernetes {
                cluster,
                stop,
                webhook,
            }) = self.kubernetes
            else {
                return anyhow::Ok(());
            };
            let stopping = {
                let shutdown = shutdown.clone();
                async move {
                    shutdown.wait().await;
                    // Hands the Lease over at once instead of after a whole term.
                    stop.trigger();
                }
            };
            match webhook {
                Some((listener, settings)) => {
                    let serving = cluster::webhook::serve(
                        &settings,
                        listener,
                        &cluster,
                        webhook_limits,
                        shutdown.clone(),
                    );
                    tokio::join!(serving, stopping).0
                }
                None => {
                    stopping.await;
                    Ok(())
                }
            }
        };
        let public = auth_core::server::serve(
            self.public.listener,
            app,
            self.connections.within_fds(self.fds, 1),
            public_connections,
            draining,
            Some(self.shutdown_grace),
        );
        let admin = auth_core::admin::serve(
            self.admin,
            self.registry,
            self.state.readiness.clone(),
            (admin_connections, self.fds),
            shutdown,
        );
        tokio::try_join!(
            async { public.await.map_err(anyhow::Error::from) },
            async { admin.await.map_err(anyhow::Error::from) },
            webhook
        )?;
        Ok(())
    }

    /// Runs until SIGTERM or Ctrl-C.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        let (trigger, shutdown) = shutdown::channel();
        trigger.on_signals();
        self.run(shutdown).await
    }
}
