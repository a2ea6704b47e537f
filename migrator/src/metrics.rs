//! What a migrator run exposes on `/metrics` while it runs.

use prometheus::{Gauge, IntGauge, Registry};

/// The run's gauges, all prefixed `migrator_`.
#[derive(Clone)]
pub struct Metrics {
    /// Migrations applied (or reverted, for `down`/`reset`) by this run.
    pub changed: IntGauge,
    /// The newest applied schema version.
    pub schema_version: IntGauge,
    /// Migrations not yet applied.
    pub pending: IntGauge,
    /// Seconds the command took.
    pub duration: Gauge,
    /// 1 when the last command succeeded, 0 when it failed, -1 while it runs.
    pub last_result: IntGauge,
}

impl Metrics {
    /// Registers the gauges.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            changed: IntGauge::new("migrations_changed", "Migrations applied or reverted by this run")?,
            schema_version: IntGauge::new("schema_version", "Newest applied schema version")?,
            pending: IntGauge::new("migrations_pending", "Embedded migrations not yet applied")?,
            duration: Gauge::new("run_duration_seconds", "Duration of the command")?,
            last_result: IntGauge::new(
                "last_run_success",
                "1 if the command succeeded, 0 if it failed, -1 while running",
            )?,
        };
        registry.register(Box::new(metrics.changed.clone()))?;
        registry.register(Box::new(metrics.schema_version.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.last_result.clone()))?;
        metrics.last_result.set(-1);
        Ok(metrics)
    }
}
