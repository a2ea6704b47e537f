//! HTTP middleware every public listener uses: a request id with an access-log line, and request
//! metrics labelled by route template (never the raw path, which would explode cardinality).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use poem::PathPattern;
use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, Result};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use tracing::Instrument;

/// The request id header, read from trusted callers and always set on responses.
pub const REQUEST_ID: &str = "x-request-id";

/// Request counts and latencies, labelled by route template, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    // The router's patterns (`/users/:param0`) by the names users know (`/users/{id}`).
    templates: Arc<HashMap<String, String>>,
}

impl HttpMetrics {
    /// Registers `http_requests_total` and `http_request_duration_seconds`.
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            requests,
            duration,
            templates: Arc::default(),
        })
    }

    /// Labels routes with these names instead of the router's patterns (an API's documented path
    /// templates, keyed by the router pattern each one becomes).
    #[must_use]
    pub fn with_templates(mut self, templates: HashMap<String, String>) -> Self {
        self.templates = Arc::new(templates);
        self
    }
}

/// The endpoint wrapped by [`HttpMetrics`].
pub struct MetricsEndpoint<E> {
    inner: E,
    metrics: HttpMetrics,
}

impl<E: Endpoint> Middleware<E> for HttpMetrics {
    type Output = MetricsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        MetricsEndpoint {
            inner,
            metrics: self.clone(),
        }
    }
}

impl<E: Endpoint> Endpoint for MetricsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let method = method_label(req.method());
        let started = Instant::now();
        let response = match self.inner.call(req).await {
            Ok(output) => output.into_response(),
            Err(error) => error.into_response(),
        };
        let route = response.data::<PathPattern>().map_or("unmatched", |pattern| {
            self.metrics
                .templates
                .get(&*pattern.0)
                .map_or(&*pattern.0, String::as_str)
        });
        self.metrics
            .requests
            .with_label_values(&[route, method, response.status().as_str()])
            .inc();
        self.metrics
            .duration
            .with_label_values(&[route, method])
            .observe(started.elapsed().as_secs_f64());
        Ok(response)
    }
}

/// The method as a metric label: the standard ones by name, anything else as `other`, so a client
/// inventing methods cannot create series.
fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Gives every request an id (the caller's `X-Request-Id` when it is sane, else a new UUID), runs
/// it inside a span carrying that id, echoes the id on the response and logs one line per request.
#[derive(Clone, Copy, Default)]
pub struct RequestId;

/// The endpoint wrapped by [`RequestId`].
pub struct RequestIdEndpoint<E> {
    inner: E,
}

impl<E: Endpoint> Middleware<E> for RequestId {
    type Output = RequestIdEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        RequestIdEndpoint { inner }
    }
}

fn is_sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl<E: Endpoint> Endpoint for RequestIdEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Self::Output> {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .filter(|id| is_sane(id))
            .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
        let method = req.method().clone();
        // The path only: a query string may carry secrets.
        let path = req.uri().path().to_owned();
        let span = tracing::info_span!("request", request_id = %id);
        async move {
            let started = Instant::now();
            let mut response = match self.inner.call(req).await {
                Ok(output) => output.into_response(),
                Err(error) => error.into_response(),
            };
            tracing::info!(
                method = %method,
                path = %path,
                status = response.status().as_u16(),
                duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(REQUEST_ID, value);
            }
            Ok(response)
        }
        .instrument(span)
        .await
    }
}
