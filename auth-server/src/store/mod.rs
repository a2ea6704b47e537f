//! PostgreSQL access: one module per table group, plain SQL, constraint errors mapped in
//! `crate::constraints`.

pub mod admin;
pub mod audit;
pub mod known_sources;
pub mod refresh;
pub mod revoked;
pub mod sessions;
pub mod single_use;
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
    /// The block of addresses one client controls: the address itself for IPv4, its /64 for IPv6
    /// (one subscriber or host is routinely given a whole /64).
    fn block(&self) -> Option<(std::net::IpAddr, u8)> {
        use std::net::IpAddr;
        match self.ip? {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Some((IpAddr::V4(v4), 32)),
                None => Some((IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()), 64)),
            },
            ip => Some((ip, 32)),
        }
    }

    /// Who a per-address rate limit counts (all clients without a known address share one).
    pub fn rate_limit_key(&self) -> String {
        self.network().unwrap_or_else(|| "unknown".to_owned())
    }

    /// The client's address block as an `inet` literal (`203.0.113.5/32`, `2001:db8:1:2::/64`).
    pub fn network(&self) -> Option<String> {
        self.block().map(|(ip, bits)| format!("{ip}/{bits}"))
    }

    fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}
