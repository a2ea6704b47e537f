//! Building the verifier from its settings and running it until shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use auth_core::listener::{self, BoundListener};
use auth_core::readiness::Readiness;
use auth_core::redis::RedisCheck;
use auth_core::shutdown::{self, Shutdown};
use secrecy::ExposeSecret;

use crate::settings::Settings;

/// A verifier whose listeners are bound, ready to run.
pub struct Verifier {
    admin: BoundListener,
    registry: prometheus::Registry,
    readiness: Readiness,
}

impl Verifier {
    /// Binds the listeners and creates the (lazily connecting) Redis pool.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let redis = auth_core::redis::pool(
            settings.redis_url.expose_secret(),
            4,
            settings.redis_timeout,
        )
        .context("cannot create the Redis pool")?;
        let readiness = Readiness::default();
        readiness.add_check(RedisCheck(redis));
        let admin = listener::bind("admin", &settings.admin_listen).await?;
        Ok(Self {
            admin,
            registry: auth_core::metrics::new_registry("verifier"),
            readiness,
        })
    }

    /// The admin listener's address (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(admin = %self.admin.local_addr, "token-verifier started");
        auth_core::admin::serve(self.admin, self.registry, self.readiness, shutdown).await?;
        Ok(())
    }

    /// Runs until SIGTERM or Ctrl-C.
    pub async fn run_until_signalled(self) -> anyhow::Result<()> {
        let (trigger, shutdown) = shutdown::channel();
        trigger.on_signals();
        self.run(shutdown).await
    }
}
