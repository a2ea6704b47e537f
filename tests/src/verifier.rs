//! The token verifier started in-process, in front of a test server's keys and Redis.

use std::time::Duration;

use auth_core::settings::Environment;
use auth_core::shutdown::{self, ShutdownTrigger};
use auth_core::telemetry::LogFormat;
use reqwest::Client;
use token_verifier::settings::Settings;
use token_verifier::startup::Verifier;
use tokio::task::JoinHandle;

/// A running verifier.
pub struct TestVerifier {
    /// `http://127.0.0.1:{public port}`.
    pub url: String,
    /// `http://127.0.0.1:{admin port}`.
    pub admin_url: String,
    /// An HTTP client.
    pub client: Client,
    trigger: ShutdownTrigger,
    task: JoinHandle<anyhow::Result<()>>,
}

/// Settings for a verifier using `jwks_url` and `redis_url`.
pub fn verifier_settings(jwks_url: &str, redis_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".to_owned(),
        admin_listen: "127.0.0.1:0".to_owned(),
        jwks_url: Some(jwks_url.to_owned()),
        redis_url: redis_url.to_owned().into(),
        environment: Environment::Test,
        log_format: LogFormat::Human,
        log_level: std::env::var("TEST_LOG").unwrap_or_else(|_| "off".to_owned()),
        ..Settings::default()
    }
}

/// Starts a verifier with `settings` and waits until it is ready (when `wait_ready`).
pub async fn start_verifier(settings: Settings, wait_ready: bool) -> TestVerifier {
    let verifier = Verifier::build(settings).await.expect("the verifier builds");
    let url = format!("http://{}", verifier.public_addr());
    let admin_url = format!("http://{}", verifier.admin_addr());
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(verifier.run(shutdown));
    let verifier = TestVerifier {
        url,
        admin_url,
        client: Client::new(),
        trigger,
        task,
    };
    if wait_ready {
        verifier.wait_until_ready().await;
    }
    verifier
}

impl TestVerifier {
    /// Polls readiness until 200 (at most ten seconds).
    pub async fn wait_until_ready(&self) {
        let url = format!("{}/health/ready", self.admin_url);
        crate::process::wait_for_status(&url, 200, Duration::from_millis(25)).await;
    }

    /// `GET /verify` about the original request `GET {uri}`, described as nginx does (the default
    /// `VERIFIER_ORIGINAL_REQUEST`).
    pub fn verify_request(&self, uri: &str) -> reqwest::RequestBuilder {
        self.client
            .get(format!("{}/verify", self.url))
            .header("x-original-method", "GET")
            .header("x-original-uri", uri)
    }

    /// `GET /verify` about `GET /` with `Authorization: Bearer {token}`.
    pub async fn verify(&self, token: &str) -> reqwest::Response {
        self.verify_request("/")
            .bearer_auth(token)
            .send()
            .await
            .expect("the verifier answers")
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::process::get_text(&self.client, &format!("{}/metrics", self.admin_url)).await
    }

    /// Polls `/verify` with `token` until it answers `status`; returns how long that took.
    pub async fn wait_for_status(&self, token: &str, status: u16, within: Duration) -> Duration {
        let started = std::time::Instant::now();
        while started.elapsed() < within {
            if self.verify(token).await.status() == status {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("the verifier did not answer {status} within {within:?}");
    }

    /// Stops the verifier.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task
            .await
            .expect("the verifier task ends")
            .expect("the verifier ran cleanly");
    }
}
