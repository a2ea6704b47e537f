//! Binding listeners up front, so a program knows (and can report) its real address before serving.

use std::net::SocketAddr;

use poem::listener::TcpAcceptor;

/// A bound TCP listener and the address it actually got (port 0 picks a free port).
pub struct BoundListener {
    /// The acceptor to hand to `poem::Server::new_with_acceptor`.
    pub acceptor: TcpAcceptor,
    /// The address the listener is bound to.
    pub local_addr: SocketAddr,
}

/// Binds `addr`; the error names what failed to bind, for the start-up message.
pub async fn bind(what: &str, addr: &str) -> anyhow::Result<BoundListener> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|error| anyhow::anyhow!("cannot bind the {what} listener to {addr}: {error}"))?;
    let local_addr = listener.local_addr()?;
    let acceptor = TcpAcceptor::from_tokio(listener)?;
    Ok(BoundListener { acceptor, local_addr })
}
