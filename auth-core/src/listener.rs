//! Binding listeners up front, so a program knows (and can report) its real address before serving.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A bound TCP listener and the address it actually got (port 0 picks a free port).
pub struct BoundListener {
    /// The listener, for [`crate::server::serve`].
    pub listener: TcpListener,
    /// The address the listener is bound to.
    pub local_addr: SocketAddr,
}

/// Binds `addr`; the error names what failed to bind, for the start-up message.
pub async fn bind(what: &str, addr: &str) -> anyhow::Result<BoundListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot bind the {what} listener to {addr}: {error}"))?;
    let local_addr = listener.local_addr()?;
    Ok(BoundListener { listener, local_addr })
}
