//! The admin listener every program runs on its own port: `/metrics`, `/health/live`,
//! `/health/ready`. It is kept off the public port so an Ingress never exposes it.

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{EndpointExt, IntoResponse, Response, Route, get, handler};
use prometheus::Registry;

use crate::listener::BoundListener;
use crate::readiness::Readiness;
use crate::server::{ConnectionLimits, ListenerMetrics};
use crate::shutdown::Shutdown;

/// The admin routes, also mountable inside another app (tests, or a single-port development mode).
pub fn routes(registry: Registry, readiness: Readiness) -> impl poem::Endpoint {
    Route::new()
        .at("/metrics", get(metrics))
        .at("/health/live", get(live))
        .at("/health/ready", get(ready))
        .data(registry)
        .data(readiness)
}

/// Serves the admin routes until shutdown, within the admin listener's limits
/// ([`ConnectionLimits::admin`] fitted to the process's `fds`).
pub async fn serve(
    listener: BoundListener,
    registry: Registry,
    readiness: Readiness,
    (connections, fds): (ListenerMetrics, u64),
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let limits = ConnectionLimits::admin().within_fds(fds, 1);
    crate::server::serve(
        listener.listener,
        routes(registry, readiness),
        limits,
        connections,
        shutdown.wait(),
        None,
    )
    .await
}

#[handler]
fn metrics(Data(registry): Data<&Registry>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render(registry))
}

#[handler]
fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
}

#[handler]
async fn ready(Data(readiness): Data<&Readiness>) -> Response {
    readiness_response(readiness).await
}

/// The readiness report as JSON: 200 when ready, 503 otherwise.
pub async fn readiness_response(readiness: &Readiness) -> Response {
    let report = readiness.report().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Json(report).with_status(status).into_response()
}
