//! A closed-loop HTTP/1.1 load generator: N workers, each with its own keep-alive connection,
//! sending the next request as soon as the previous answer is read. Lean on purpose (hyper, no
//! client pool), because it shares the machine's two cores with what it measures.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 connection.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
        self.sender.ready().await?;
        let response: Response<hyper::body::Incoming> = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests completed within the measured window.
    pub requests: u64,
    /// Requests that did not get the expected status.
    pub failures: u64,
    /// The measured window.
    pub elapsed: Duration,
    /// Latencies of the completed requests, sorted, in microseconds.
    pub latencies_us: Vec<u32>,
}

impl Report {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The `p`th percentile latency in milliseconds.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
        f64::from(self.latencies_us[rank]) / 1000.0
    }
}

/// Runs `workers` concurrent closed loops for `warmup + measure`; only requests sent in the
/// `measure` window count. `step(worker, connection)` performs one request and hands the
/// connection back with whether it got the expected answer.
pub async fn run<S, F>(
    addr: SocketAddr,
    workers: usize,
    warmup: Duration,
    measure: Duration,
    step: S,
) -> anyhow::Result<Report>
where
    S: Fn(usize, Connection) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = anyhow::Result<(Connection, bool)>> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let window_start = started + warmup;
    let mut tasks = Vec::with_capacity(workers);
    for worker in 0..workers {
        let step = step.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut connection = Connection::open(addr).await?;
            let (mut requests, mut failures, mut latencies) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let (returned, ok) = step(worker, connection).await?;
                connection = returned;
                let done = Instant::now();
                if sent >= window_start {
                    requests += 1;
                    failures += u64::from(!ok);
                    latencies.push(u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
                }
            }
            anyhow::Ok((requests, failures, latencies))
        }));
    }
    tokio::time::sleep(warmup + measure).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().saturating_sub(warmup);
    let mut report = Report {
        requests: 0,
        failures: 0,
        elapsed,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (requests, failures, latencies) = task.await??;
        report.requests += requests;
        report.failures += failures;
        report.latencies_us.extend(latencies);
    }
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// A request with a body and headers.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(body)).expect("a valid request")
}

/// The `p` quantile (0–1) of ascending `sorted` samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}
