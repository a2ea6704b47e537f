//! Who is calling: the client address (after trusted proxies) and user agent.

use std::net::IpAddr;

use poem::Request;

use crate::store::ClientInfo;

const MAX_USER_AGENT: usize = 512;

/// The client of `req`. With `trusted_hops` proxies in front, the address is the entry that many
/// places from the right of `X-Forwarded-For` (entries further left are client-controlled).
pub fn client_info(req: &Request, trusted_hops: usize) -> ClientInfo {
    let peer = req.remote_addr().as_socket_addr().map(std::net::SocketAddr::ip);
    let ip = if trusted_hops == 0 {
        peer
    } else {
        forwarded_for(req, trusted_hops).or(peer)
    };
    let user_agent = req
        .headers()
        .get(poem::http::header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .map(|agent| agent.chars().take(MAX_USER_AGENT).collect());
    ClientInfo { ip, user_agent }
}

fn forwarded_for(req: &Request, trusted_hops: usize) -> Option<IpAddr> {
    let entries: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    entries.len().checked_sub(trusted_hops)?;
    entries.get(entries.len() - trusted_hops)?.parse().ok()
}
