//! Assertions shared by the API tests.

use platform_tests::server::TestServer;
use reqwest::Response;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

/// Asserts a problem+json response with `status`, returning the body.
pub async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("a JSON problem");
    assert_eq!(body["status"], status);
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:auth-platform:problem:")
    );
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// The fields named in a problem's `errors`.
pub fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A connection to the server's database.
pub async fn db(server: &TestServer) -> PgConnection {
    PgConnection::connect(&server.db.url)
        .await
        .expect("the test database accepts connections")
}

/// `SELECT count(*) FROM {table}`.
pub async fn count(server: &TestServer, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut db(server).await)
        .await
        .unwrap()
}

/// The event types in the audit log, oldest first.
pub async fn audit_events(server: &TestServer) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM audit_logs ORDER BY id")
        .fetch_all(&mut db(server).await)
        .await
        .unwrap()
}

/// The response body as JSON, after checking the status.
pub async fn json(response: Response, status: u16) -> Value {
    let actual = response.status();
    let body = response.text().await.unwrap();
    assert_eq!(actual, status, "unexpected status; body: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// `token` verified by auth-core against the keys the server publishes, with the server's
/// default issuer and audience.
pub async fn verified(server: &TestServer, token: &str) -> auth_core::token::VerifiedToken {
    let jwks = server.get_text("/.well-known/jwks.json").await;
    let keys = auth_core::token::KeySet::from_json(jwks.as_bytes()).unwrap();
    auth_core::token::TokenValidator::new(auth_core::token::ValidatorSettings {
        issuer: "http://localhost:8080".into(),
        audience: "auth-platform".into(),
        leeway: std::time::Duration::from_secs(30),
        max_lifetime: std::time::Duration::from_secs(900),
    })
    .validate(token, &keys)
    .unwrap()
}

/// The status of a login as `email` with `password`.
pub async fn login_status(server: &TestServer, email: &str, password: &str) -> u16 {
    server
        .post(
            "/api/auth/login",
            &json!({ "email": email, "password": password }),
        )
        .await
        .status()
        .as_u16()
}
