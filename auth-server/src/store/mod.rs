//! PostgreSQL access: one module per table group, plain SQL, constraint errors mapped in
//! `crate::constraints`.

pub mod audit;
pub mod refresh;
pub mod revoked;
pub mod sessions;
pub mod users;

/// Where a request came from, as recorded on sessions and audit entries.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    /// The client address (after trusted proxies).
    pub ip: Option<std::net::IpAddr>,
    /// The `User-Agent`, truncated to what the schema keeps.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// Who a per-address rate limit counts (all clients without a known address share one).
    pub fn rate_limit_key(&self) -> String {
        self.ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}
