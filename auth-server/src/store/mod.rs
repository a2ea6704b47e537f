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
    fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}
