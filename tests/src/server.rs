//! The auth server started in-process on random ports, against this test's own database and
//! Redis database, with fast password hashing.

use std::time::Duration;

use auth_core::settings::Environment;
use auth_core::shutdown::{self, ShutdownTrigger};
use auth_core::telemetry::LogFormat;
use auth_server::settings::Settings;
use auth_server::startup::Application;
use reqwest::{Client, Response};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::process::get_text;
use crate::{TestDatabase, TestRedis, migrated_database, test_redis};

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:{public port}`.
    pub url: String,
    /// `http://127.0.0.1:{admin port}`.
    pub admin_url: String,
    /// Its database.
    pub db: TestDatabase,
    /// Its Redis URL.
    pub redis_url: String,
    /// An HTTP client.
    pub client: Client,
    trigger: ShutdownTrigger,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A user registered through the API, with the tokens of its first session.
#[derive(Debug, Clone)]
pub struct TestUser {
    /// Its id.
    pub id: String,
    /// Its email address.
    pub email: String,
    /// Its password.
    pub password: String,
    /// The access token.
    pub access: String,
    /// The refresh token.
    pub refresh: String,
    /// The session id.
    pub session: String,
}

/// The settings every test server starts from: loopback, random ports, bcrypt cost 4.
pub fn test_settings(db: &TestDatabase, redis_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".to_owned(),
        admin_listen: "127.0.0.1:0".to_owned(),
        database_url: db.url.clone().into(),
        redis_url: redis_url.to_owned().into(),
        bcrypt_cost: 4,
        environment: Environment::Test,
        log_format: LogFormat::Human,
        log_level: std::env::var("TEST_LOG").unwrap_or_else(|_| "off".to_owned()),
        ..Settings::default()
    }
}

/// A server on a fresh database and Redis database.
pub async fn spawn_server() -> TestServer {
    spawn_server_with(|_| {}).await
}

/// A server on a fresh database and Redis database, with `customize` applied to its settings.
pub async fn spawn_server_with(customize: impl FnOnce(&mut Settings)) -> TestServer {
    let db = migrated_database().await;
    let redis: TestRedis = test_redis();
    start(db, &redis.url, customize).await
}

/// A server on an existing database and Redis (a restart, or a second replica).
pub async fn start(db: TestDatabase, redis_url: &str, customize: impl FnOnce(&mut Settings)) -> TestServer {
    let mut settings = test_settings(&db, redis_url);
    customize(&mut settings);
    if std::env::var_os("TEST_LOG").is_some() {
        auth_core::telemetry::init(LogFormat::Human, &settings.log_level);
    }
    let app = Application::build(settings).await.expect("the server builds");
    let url = format!("http://{}", app.public_addr());
    let admin_url = format!("http://{}", app.admin_addr());
    let (trigger, shutdown) = shutdown::channel();
    let task = tokio::spawn(app.run(shutdown));
    let server = TestServer {
        url,
        admin_url,
        db,
        redis_url: redis_url.to_owned(),
        client: Client::new(),
        trigger,
        task,
    };
    server.wait_until_ready().await;
    server
}

impl TestServer {
    /// Polls the admin readiness until it answers 200 (at most ten seconds).
    pub async fn wait_until_ready(&self) {
        let url = format!("{}/health/ready", self.admin_url);
        crate::process::wait_for_status(&url, 200, Duration::from_millis(25)).await;
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(self) {
        self.trigger.trigger();
        self.task
            .await
            .expect("the server task ends")
            .expect("the server ran cleanly");
    }

    /// `POST` a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST` a JSON body with a bearer token.
    pub async fn post_auth(&self, path: &str, token: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST /api/auth/logout` with `token`.
    pub async fn logout(&self, token: &str) -> Response {
        self.post_auth("/api/auth/logout", token, &json!({})).await
    }

    /// `GET` with a bearer token.
    pub async fn get_auth(&self, path: &str, token: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    /// A request builder for anything else.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url))
    }

    /// Registers `email` with `password` and returns the user and its tokens.
    pub async fn register(&self, email: &str, password: &str) -> TestUser {
        let response = self
            .post(
                "/api/auth/register",
                &json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(response.status(), 201, "registration failed");
        let body: Value = response.json().await.expect("a JSON body");
        TestUser {
            id: body["user"]["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            password: password.to_owned(),
            access: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
            refresh: body["tokens"]["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            session: body["session"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers a new user with a unique address and a good password.
    pub async fn new_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid_like());
        self.register(&email, "correct horse battery staple").await
    }

    /// Logs `user` in again (a new session).
    pub async fn login(&self, user: &TestUser) -> TestUser {
        let response = self
            .post(
                "/api/auth/login",
                &json!({ "email": user.email, "password": user.password }),
            )
            .await;
        assert_eq!(response.status(), 200, "login failed");
        let body: Value = response.json().await.expect("a JSON body");
        TestUser {
            access: body["tokens"]["access_token"].as_str().unwrap().to_owned(),
            refresh: body["tokens"]["refresh_token"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            session: body["session"]["id"].as_str().unwrap().to_owned(),
            ..user.clone()
        }
    }

    /// A Redis connection to the server's Redis database.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("a valid Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("Redis accepts connections")
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        get_text(&self.client, &format!("{}/metrics", self.admin_url)).await
    }

    /// The body of `GET path` on the public listener, as text.
    pub async fn get_text(&self, path: &str) -> String {
        get_text(&self.client, &format!("{}{path}", self.url)).await
    }
}

/// A unique, URL- and email-safe id.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}
