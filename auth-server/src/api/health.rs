//! `/api/health/*`: the same readiness the admin listener reports, for callers that can only
//! reach the public port, plus database pool statistics. Anyone can call these, so they say what
//! is failing but never why (the admin port's `/health/ready` does), and the checks run at most
//! once per [`FRESHNESS`] however many callers ask.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use auth_core::readiness::ReadinessReport;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::Tag;
use crate::state::SharedState;

/// How long one evaluation of the checks answers every caller.
const FRESHNESS: Duration = Duration::from_secs(1);

/// A value computed at most once per [`FRESHNESS`]; callers arriving meanwhile wait for the one
/// evaluation under way instead of starting their own.
struct Recent<T> {
    value: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Recent<T> {
    fn new() -> Self {
        Self {
            value: Mutex::new(None),
        }
    }

    async fn get(&self, compute: impl AsyncFnOnce() -> T) -> T {
        let mut value = self.value.lock().await;
        if let Some((at, cached)) = &*value
            && at.elapsed() < FRESHNESS
        {
            return cached.clone();
        }
        let fresh = compute().await;
        *value = Some((Instant::now(), fresh.clone()));
        fresh
    }
}

/// Health probes.
pub struct HealthApi {
    state: SharedState,
    readiness: Recent<ReadinessReport>,
    database: Recent<DatabaseHealth>,
}

impl HealthApi {
    /// The API over `state`.
    pub fn new(state: SharedState) -> Self {
        Self {
            state,
            readiness: Recent::new(),
            database: Recent::new(),
        }
    }
}

/// One dependency or start-up condition.
#[derive(Debug, Object)]
pub struct ComponentView {
    /// `database`, `schema`, `redis`, …
    pub name: String,
    /// `ok`, `pending` or `failing` (why: on the admin port's `/health/ready`).
    pub status: String,
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
#[derive(Debug, Clone, Object)]
#[oai(skip_serializing_if_is_none)]
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
    #[oai(path = "/", method = "get", operation_id = "getHealth")]
    async fn health(&self) -> HealthResponse {
        self.ready().await
    }

    /// Liveness: the process runs
    #[oai(path = "/live", method = "get", operation_id = "healthLive")]
    async fn live(&self) -> Json<Liveness> {
        Json(Liveness {
            status: "alive".to_owned(),
        })
    }

    /// Readiness: database, Redis and schema
    #[oai(path = "/ready", method = "get", operation_id = "healthReady")]
    async fn ready(&self) -> HealthResponse {
        let report = self
            .readiness
            .get(async || self.state.readiness.report().await)
            .await;
        if report.is_ready() {
            HealthResponse::Ok(Json(report.into()))
        } else {
            HealthResponse::Unavailable(Json(report.into()))
        }
    }

    /// Database pool statistics and latency
    #[oai(path = "/database", method = "get", operation_id = "healthDatabase")]
    async fn database(&self) -> DatabaseResponse {
        let health = self.database.get(async || self.measure_database().await).await;
        if health.latency_ms.is_some() {
            DatabaseResponse::Ok(Json(health))
        } else {
            DatabaseResponse::Unavailable(Json(health))
        }
    }
}

impl HealthApi {
    async fn measure_database(&self) -> DatabaseHealth {
        let pool = &self.state.db;
        let started = Instant::now();
        let answered = sqlx::query("SELECT 1").execute(pool).await.is_ok();
        DatabaseHealth {
            status: if answered { "ok" } else { "failing" }.to_owned(),
            latency_ms: answered.then(|| started.elapsed().as_secs_f64() * 1000.0),
            pool_size: pool.size(),
            pool_idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            pool_max: pool.options().get_max_connections(),
        }
    }
}
