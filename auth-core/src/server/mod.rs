//! The HTTP/1.1 server every listener of the platform runs on: poem endpoints served by hyper with
//! the connection-level limits a hostile client cannot exhaust — a cap on concurrent connections
//! (beyond it a 503 and close, never a queue), deadlines for a request's headers, for idle
//! keep-alive connections and for a stalled request body, a bound on header size, an accept loop
//! that backs off when file descriptors run out instead of spinning, and a file-descriptor limit
//! raised to what the process may use.

mod connection;
mod limits;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::{EndpointExt, IntoEndpoint, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
pub use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use limits::{ConnectionLimits, ListenerMetrics, raise_fd_limit};

/// How long the accept loop rests after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this long about failing accepts.
const ACCEPT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// The body of the answer to a connection beyond the cap (written without waiting, then closed).
const OVER_CAPACITY: &str =
    r#"{"type":"urn:auth-platform:problem:overloaded","title":"Service Unavailable","status":503}"#;

fn over_capacity() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/problem+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{OVER_CAPACITY}",
        OVER_CAPACITY.len()
    )
}

/// Errors that mean the process (or system) is out of a resource, not that one client failed.
fn is_exhaustion(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(23 | 24 | 12 | 105))
}

/// Serves `endpoint` on `listener` within `limits` until `signal` fires, then lets requests in
/// flight finish within `grace` (forever without one) and closes what is left.
pub async fn serve<E>(
    listener: TcpListener,
    endpoint: E,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    signal: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    serve_with(listener, None, endpoint, limits, metrics, signal, grace).await
}

/// [`serve`] over TLS: the handshake must finish within the header deadline.
pub async fn serve_tls<E>(
    listener: TcpListener,
    tls: TlsAcceptor,
    endpoint: E,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    signal: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    serve_with(listener, Some(tls), endpoint, limits, metrics, signal, grace).await
}

async fn serve_with<E>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    endpoint: E,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    signal: impl Future<Output = ()>,
    grace: Option<Duration>,
) -> std::io::Result<()>
where
    E: IntoEndpoint,
    E::Endpoint: 'static,
{
    let endpoint: SharedEndpoint = Arc::new(endpoint.into_endpoint().map_to_response().boxed());
    let local = listener.local_addr()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let tracker = TaskTracker::new();
    let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
    let mut last_warning: Option<Instant> = None;
    let mut failed_accepts = 0u64;
    tokio::pin!(signal);
    loop {
        tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            tracker.spawn(connection::serve(connection::Connection {
                                stream,
                                local,
                                remote,
                                permit,
                                endpoint: endpoint.clone(),
                                limits: limits.clone(),
                                metrics: metrics.clone(),
                                stop: stop.clone(),
                                kill: kill.clone(),
                                tls: tls.clone(),
                            }));
                        }
                        Err(_) => {
                            metrics.closed("over_capacity");
                            let _ = stream.try_write(over_capacity().as_bytes());
                        }
                    }
                }
                Err(error) => {
                    metrics.accept_failed();
                    failed_accepts += 1;
                    if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARNING_EVERY) {
                        tracing::warn!(error = %error, failed_accepts, "cannot accept connections");
                        last_warning = Some(Instant::now());
                        failed_accepts = 0;
                    }
                    if is_exhaustion(&error) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            },
        }
    }
    drop(listener);
    stop.cancel();
    tracker.close();
    match grace {
        Some(grace) => {
            if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
                kill.cancel();
                tracker.wait().await;
            }
        }
        None => tracker.wait().await,
    }
    Ok(())
}

/// A poem endpoint behind an `Arc`, as each connection shares it.
type SharedEndpoint = Arc<poem::endpoint::BoxEndpoint<'static, Response>>;
