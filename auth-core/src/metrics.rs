//! The Prometheus registry every program exposes on its admin listener.

use prometheus::{Encoder, Registry, TextEncoder};

/// A registry whose metric names all start with `prefix_`, with the process collector (resident
/// memory, CPU, open file descriptors) already registered.
pub fn new_registry(prefix: &str) -> Registry {
    let registry = Registry::new_custom(Some(prefix.to_owned()), None)
        .expect("a static prefix is a valid metric prefix");
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once per registry");
    registry
}

/// The registry in the Prometheus text exposition format.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buffer)
        .expect("encoding gathered metrics into memory cannot fail");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// A gauge whose value is computed when Prometheus scrapes, so it is never stale.
struct ComputedGauge<F> {
    gauge: prometheus::Gauge,
    compute: F,
}

impl<F: Fn() -> f64 + Send + Sync> prometheus::core::Collector for ComputedGauge<F> {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge.set((self.compute)());
        self.gauge.collect()
    }
}

/// Registers gauge `name` whose value is `compute()` at scrape time.
pub fn register_computed_gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    compute: impl Fn() -> f64 + Send + Sync + 'static,
) -> prometheus::Result<()> {
    let gauge = prometheus::Gauge::new(name, help)?;
    registry.register(Box::new(ComputedGauge { gauge, compute }))
}
