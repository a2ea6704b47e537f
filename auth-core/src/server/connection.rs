//! One connection: hyper's HTTP/1.1 with a watchdog for the header and idle deadlines, and request
//! bodies that may not stall.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use poem::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Addr, Body, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{ConnectionLimits, ListenerMetrics, SharedEndpoint};

/// Everything one connection task needs.
pub(super) struct Connection {
    pub stream: TcpStream,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub permit: OwnedSemaphorePermit,
    pub endpoint: SharedEndpoint,
    pub limits: ConnectionLimits,
    pub metrics: ListenerMetrics,
    /// Fired at shutdown: finish the request in flight, take no more.
    pub stop: CancellationToken,
    /// Fired when the shutdown grace is over: close now.
    pub kill: CancellationToken,
    /// TLS, when the listener speaks it.
    pub tls: Option<TlsAcceptor>,
}

const NONE: u64 = u64::MAX;

/// What the watchdog needs to know, updated by the socket and the service without locks.
struct Activity {
    started: Instant,
    // Milliseconds since `started`.
    last_io: AtomicU64,
    head_started: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    /// A new connection owes its first request head from the moment it is accepted: a silent
    /// connection is closed at the header deadline, not after an idle one.
    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_io: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived: when no request is being served, they start a request head.
    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self
                .head_started
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// The head is complete: the service has the request.
    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
    }

    fn request_finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.wrote();
    }

    /// The next instant a limit may run out, or the limit that has run out.
    fn check(&self, limits: &ConnectionLimits) -> Result<Instant, &'static str> {
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(NONE - 1);
        let now = self.now();
        let head = self.head_started.load(Ordering::Acquire);
        let (due, reason) = if head != NONE {
            (
                head.saturating_add(millis(limits.header_timeout)),
                "header_timeout",
            )
        } else if self.in_flight.load(Ordering::Acquire) == 0 {
            let last = self.last_io.load(Ordering::Relaxed);
            (last.saturating_add(millis(limits.idle_timeout)), "idle_timeout")
        } else {
            // A request is being served; its body has its own deadline.
            (now.saturating_add(millis(limits.idle_timeout)), "")
        };
        if due <= now && !reason.is_empty() {
            Err(reason)
        } else {
            Ok(self.started + Duration::from_millis(due))
        }
    }
}

/// The socket, reporting activity; it holds the connection's place under the cap for as long as
/// it lives (an upgraded connection keeps it).
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    _permit: OwnedSemaphorePermit,
    metrics: ListenerMetrics,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.metrics.ended();
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.activity.wrote();
        Pin::new(&mut self.stream).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.activity.wrote();
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Ends the request's share of the connection when the service is done with it.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// `body`, failing when no chunk arrives within `timeout`.
fn stall_limited(body: Body, timeout: Duration) -> Body {
    let chunks = body.into_bytes_stream();
    Body::from_bytes_stream(futures_util::stream::unfold(
        chunks,
        move |mut chunks| async move {
            match tokio::time::timeout(timeout, chunks.next()).await {
                Ok(Some(chunk)) => Some((chunk, chunks)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request body stalled",
                    )),
                    chunks,
                )),
            }
        },
    ))
}

fn has_body(request: &poem::Request) -> bool {
    let headers = request.headers();
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0")
}

/// Serves one connection until the client leaves, a limit runs out or shutdown ends it.
pub(super) async fn serve(connection: Connection) {
    let Connection {
        stream,
        local,
        remote,
        permit,
        endpoint,
        limits,
        metrics,
        stop,
        kill,
        tls,
    } = connection;
    metrics.opened();
    let activity = Arc::new(Activity::new());
    let io = Watched {
        stream,
        activity: activity.clone(),
        _permit: permit,
        metrics: metrics.clone(),
    };
    let body_timeout = limits.body_timeout;
    let scheme = if tls.is_some() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    };
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: hyper::Request<Incoming>| {
            activity.request_started();
            let in_flight = InFlight(activity.clone());
            let endpoint = endpoint.clone();
            let scheme = scheme.clone();
            async move {
                let mut request = poem::Request::from((
                    request,
                    LocalAddr(Addr::SocketAddr(local)),
                    RemoteAddr(Addr::SocketAddr(remote)),
                    scheme,
                ));
                if has_body(&request) {
                    let body = request.take_body();
                    request.set_body(stall_limited(body, body_timeout));
                }
                let response = endpoint.get_response(request).await;
                drop(in_flight);
                Ok::<_, Infallible>(hyper::Response::from(response))
            }
        }
    });
    match tls {
        None => drive(io, service, activity, limits, metrics, stop, kill).await,
        Some(acceptor) => {
            // The handshake is part of the request head: it gets the header deadline.
            match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
                Ok(Ok(io)) => drive(io, service, activity, limits, metrics, stop, kill).await,
                Ok(Err(_)) => metrics.closed("tls_handshake"),
                Err(_) => metrics.closed("header_timeout"),
            }
        }
    }
}

/// The body of every response, as poem hands it to hyper.
type ResponseBody = http_body_util::combinators::BoxBody<bytes::Bytes, io::Error>;

/// Runs hyper on the (plain or TLS) stream under the watchdog.
async fn drive<I, S>(
    io: I,
    service: S,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    metrics: ListenerMetrics,
    stop: CancellationToken,
    kill: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = ResponseBody, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // The watchdog below keeps the header and idle deadlines apart (hyper's header timer runs
        // from the moment a connection waits for a head, idle or not). Hyper's timer at the idle
        // deadline still bounds a head that began arriving while the previous request was being
        // served (pipelined), which the watchdog cannot tell from that request's body.
        .header_read_timeout(limits.idle_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let due = match activity.check(&limits) {
            Ok(due) => due,
            Err(reason) => {
                metrics.closed(reason);
                return;
            }
        };
        tokio::select! {
            _ = connection.as_mut() => return,
            () = tokio::time::sleep_until(due.into()) => {}
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
            () = kill.cancelled() => return,
        }
    }
}
