//! The verifier's metrics: decisions and rejections, the cache, and (computed at scrape time)
//! the revocation index and key freshness. Nothing on the request path takes a label lookup or a
//! histogram: with every request of an app passing through, those atomics are the cost.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Counters touched on the request path, resolved once so a request does no label lookups.
#[derive(Clone)]
pub struct VerifierMetrics {
    /// Requests allowed with an identity.
    pub allowed: IntCounter,
    /// Requests to public paths.
    pub public: IntCounter,
    /// Requests refused for a missing or bad token.
    pub unauthorized: IntCounter,
    /// Requests refused for a missing role.
    pub forbidden: IntCounter,
    /// Requests refused because the revocation state is unknown.
    pub unavailable: IntCounter,
    /// Requests refused for an ambiguous path.
    pub bad_path: IntCounter,
    /// Forward-auth requests refused for an untrustworthy description of the original request.
    pub bad_request: IntCounter,
    /// Refusals by reason (`expired`, `revoked_sid`, …).
    pub rejections: IntCounterVec,
    /// Cache hits.
    pub cache_hits: IntCounter,
    /// Cache misses (a full verification).
    pub cache_misses: IntCounter,
    /// Tokens accepted although the revocation state was unknown (fail-open mode only).
    pub failed_open: IntCounter,
    /// Key fetches that failed.
    pub key_fetch_failures: IntCounter,
}

impl VerifierMetrics {
    /// Registers every counter.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new("decisions_total", "Verification decisions by result"),
            &["result"],
        )?;
        let rejections = IntCounterVec::new(
            Opts::new("rejections_total", "Refused tokens by reason"),
            &["reason"],
        )?;
        let cache = IntCounterVec::new(
            Opts::new("token_cache_lookups_total", "Verified-token cache lookups"),
            &["result"],
        )?;
        let failed_open = IntCounter::new(
            "failed_open_total",
            "Tokens accepted with the revocation state unknown",
        )?;
        let key_fetch_failures = IntCounter::new("key_fetch_failures_total", "Failed key fetches")?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(rejections.clone()))?;
        registry.register(Box::new(cache.clone()))?;
        registry.register(Box::new(failed_open.clone()))?;
        registry.register(Box::new(key_fetch_failures.clone()))?;
        Ok(Self {
            allowed: decisions.with_label_values(&["allowed"]),
            public: decisions.with_label_values(&["public"]),
            unauthorized: decisions.with_label_values(&["unauthorized"]),
            forbidden: decisions.with_label_values(&["forbidden"]),
            unavailable: decisions.with_label_values(&["unavailable"]),
            bad_path: decisions.with_label_values(&["bad_path"]),
            bad_request: decisions.with_label_values(&["bad_request"]),
            rejections,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            failed_open,
            key_fetch_failures,
        })
    }
}
