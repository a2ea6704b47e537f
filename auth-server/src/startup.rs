//! Building the server from its settings and running it until shutdown.

use std::net::SocketAddr;

use anyhow::Context;
use auth_core::listener::{self, BoundListener};
use auth_core::readiness::Readiness;
use auth_core::redis::RedisCheck;
use auth_core::shutdown::{self, Shutdown};
use secrecy::ExposeSecret;

use crate::database::{self, DatabaseCheck, SchemaCheck};
use crate::settings::Settings;

/// A server whose listeners are bound and whose pools exist, ready to run.
pub struct Application {
    admin: BoundListener,
    registry: prometheus::Registry,
    readiness: Readiness,
}

impl Application {
    /// Binds the listeners and creates the (lazily connecting) pools.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let database = database::pool(
            settings.database_options()?,
            settings.database_max_connections,
            settings.dependency_timeout,
        );
        let redis = auth_core::redis::pool(
            settings.redis_url.expose_secret(),
            settings.redis_max_connections,
            settings.dependency_timeout,
        )
        .context("cannot create the Redis pool")?;
        let readiness = Readiness::default();
        readiness.add_check(DatabaseCheck(database.clone()));
        readiness.add_check(SchemaCheck(database));
        readiness.add_check(RedisCheck(redis));
        let admin = listener::bind("admin", &settings.admin_listen).await?;
        Ok(Self {
            admin,
            registry: auth_core::metrics::new_registry("auth_server"),
            readiness,
        })
    }

    /// The admin listener's address (useful with port 0).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        tracing::info!(admin = %self.admin.local_addr, "auth-server started");
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
