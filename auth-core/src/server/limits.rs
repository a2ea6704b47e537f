//! What a listener allows, the file-descriptor limit it lives within, and its connection metrics.

use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use serde::Deserialize;

/// Why a listener closes a connection on its own.
pub(super) const CLOSE_REASONS: [&str; 3] = ["over_capacity", "header_timeout", "idle_timeout"];

/// File descriptors kept out of the connection cap: pools, files, the process's own.
const RESERVED_FDS: usize = 128;

/// The connection-level limits of one listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ConnectionLimits {
    /// Connections served at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// The longest a request's headers may take to arrive: from the connection's start for its
    /// first request, from their first byte for the next ones.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// The longest a keep-alive connection may sit idle between requests.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The longest a request body may stall between two of its chunks.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// The largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            // Above the keep-alive timeouts of the proxies that pool connections to us (nginx
            // 60 s, most load balancers 60 s), so they never reuse a connection we just closed.
            idle_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            // An 8 KiB token, cookies and the usual headers.
            max_header_bytes: 16 * 1024,
        }
    }
}

impl ConnectionLimits {
    /// Limits for an admin listener: a scraper and a few probes.
    pub fn admin() -> Self {
        Self {
            max_connections: 64,
            ..Self::default()
        }
    }

    /// These limits with the connection cap kept below the file descriptors the process has, each
    /// connection taking `per_connection` of them (two for a proxy: the client's and the app's).
    pub fn within_fds(mut self, fds: u64, per_connection: usize) -> Self {
        let usable = usize::try_from(fds)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED_FDS);
        let usable = (usable / per_connection.max(1)).max(1);
        if self.max_connections > usable {
            tracing::warn!(
                configured = self.max_connections,
                cap = usable,
                "the connection cap is lowered to fit the file-descriptor limit"
            );
            self.max_connections = usable;
        }
        self
    }

    /// Why these limits cannot work, if they cannot.
    pub fn problem(&self) -> Option<&'static str> {
        if self.max_connections == 0 {
            Some("max_connections must be at least 1")
        } else if [self.header_timeout, self.idle_timeout, self.body_timeout].contains(&Duration::ZERO) {
            Some("timeouts must be more than zero")
        } else if self.max_header_bytes < 1024 {
            Some("max_header_bytes must be at least 1024")
        } else {
            None
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (container runtimes often start processes
/// at 1,024 with a far higher hard limit) and returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        return limit.maximum.unwrap_or(u64::MAX);
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Connection metrics of one listener.
#[derive(Clone)]
pub struct ListenerMetrics {
    active: IntGauge,
    closed: IntCounterVec,
    name: &'static str,
    accept_failures: IntCounter,
}

impl ListenerMetrics {
    /// Registers `connections_active{listener}`, `connections_closed_total{listener,reason}` and
    /// `accept_failures_total{listener}` in `registry` (once), and returns the metrics of each
    /// listener named in `names`.
    pub fn register<const N: usize>(
        registry: &Registry,
        names: [&'static str; N],
    ) -> prometheus::Result<[Self; N]> {
        let active = IntGaugeVec::new(
            Opts::new("connections_active", "Connections being served, by listener"),
            &["listener"],
        )?;
        let closed = IntCounterVec::new(
            Opts::new(
                "connections_closed_total",
                "Connections closed by a limit (over_capacity, header_timeout, idle_timeout), by listener",
            ),
            &["listener", "reason"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "accept_failures_total",
                "Failed accepts (out of file descriptors…), by listener",
            ),
            &["listener"],
        )?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        // Every series exists from the start, so rate() and alerts see a zero, not nothing.
        for name in names {
            for reason in CLOSE_REASONS {
                closed.with_label_values(&[name, reason]);
            }
        }
        Ok(names.map(|name| Self {
            active: active.with_label_values(&[name]),
            closed: closed.clone(),
            name,
            accept_failures: failures.with_label_values(&[name]),
        }))
    }

    pub(super) fn opened(&self) {
        self.active.inc();
    }

    pub(super) fn ended(&self) {
        self.active.dec();
    }

    pub(super) fn closed(&self, reason: &str) {
        self.closed.with_label_values(&[self.name, reason]).inc();
    }

    pub(super) fn accept_failed(&self) {
        self.accept_failures.inc();
    }
}
