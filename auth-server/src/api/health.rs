//! `/api/health/*`: the same readiness the admin listener reports, for callers that can only
//! reach the public port, plus database pool statistics.

use std::time::Instant;

use auth_core::readiness::ReadinessReport;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use crate::state::SharedState;

/// Health probes.
pub struct HealthApi {
    state: SharedState,
}

impl HealthApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self { state }
    }
}

/// One dependency or start-up condition.
#[derive(Debug, Object)]
pub struct ComponentView {
    /// `database`, `schema`, `redis`, …
    pub name: String,
    /// `ok`, `pending` or `failing`.
    pub status: String,
    /// Why it is failing.
    pub reason: Option<String>,
}

/// The health of the server.
#[derive(Debug, Object)]
pub struct HealthView {
    /// `ready`, `not_ready` or `draining`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Every component.
    pub components: Vec<ComponentView>,
}

impl From<ReadinessReport> for HealthView {
    fn from(report: ReadinessReport) -> Self {
        Self {
            status: report.status.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            components: report
                .components
                .into_iter()
                .map(|component| ComponentView {
                    name: component.name.to_owned(),
                    status: component.status.to_owned(),
                    reason: component.reason,
                })
                .collect(),
        }
    }
}

/// Healthy or not.
#[derive(ApiResponse)]
pub enum HealthResponse {
    /// Every component is ok.
    #[oai(status = 200)]
    Ok(Json<HealthView>),
    /// Some component is not ok (see `components`).
    #[oai(status = 503)]
    Unavailable(Json<HealthView>),
}

/// Alive.
#[derive(Debug, Object)]
pub struct Liveness {
    /// Always `alive`.
    pub status: String,
}

/// Pool statistics and round-trip latency.
#[derive(Debug, Object)]
pub struct DatabaseHealth {
    /// `ok` or `failing`.
    pub status: String,
    /// Round trip of `SELECT 1`, in milliseconds, when it succeeded.
    pub latency_ms: Option<f64>,
    /// Open connections.
    pub pool_size: u32,
    /// Idle connections.
    pub pool_idle: u32,
    /// The pool's maximum.
    pub pool_max: u32,
    /// Why it is failing.
    pub reason: Option<String>,
}

/// The database's health.
#[derive(ApiResponse)]
pub enum DatabaseResponse {
    /// The database answers.
    #[oai(status = 200)]
    Ok(Json<DatabaseHealth>),
    /// It does not.
    #[oai(status = 503)]
    Unavailable(Json<DatabaseHealth>),
}

#[OpenApi(prefix_path = "/api/health", tag = "Tag::Health")]
impl HealthApi {
    /// Overall health
    #[oai(path = "/", method = "get")]
    async fn health(&self) -> HealthResponse {
        self.ready().await
    }

    /// Liveness: the process runs
    #[oai(path = "/live", method = "get")]
    async fn live(&self) -> Json<Liveness> {
        Json(Liveness {
            status: "alive".to_owned(),
        })
    }

    /// Readiness: database, Redis and schema
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self) -> HealthResponse {
        let report = self.state.readiness.report().await;
        if report.is_ready() {
            HealthResponse::Ok(Json(report.into()))
        } else {
            HealthResponse::Unavailable(Json(report.into()))
        }
    }

    /// Database pool statistics and latency
    #[oai(path = "/database", method = "get")]
    async fn database(&self) -> DatabaseResponse {
        let pool = &self.state.db;
        let started = Instant::now();
        let outcome = sqlx::query("SELECT 1").execute(pool).await;
        let mut health = DatabaseHealth {
            status: "ok".to_owned(),
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
            pool_size: pool.size(),
            pool_idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            pool_max: pool.options().get_max_connections(),
            reason: None,
        };
        match outcome {
            Ok(_) => DatabaseResponse::Ok(Json(health)),
            Err(error) => {
                health.status = "failing".to_owned();
                health.latency_ms = None;
                health.reason = Some(error.to_string());
                DatabaseResponse::Unavailable(Json(health))
            }
        }
    }
}
