use platform_tests::server::spawn_server;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{audit_events, count, fields, json, problem};

#[tokio::test]
async fn registering_creates_the_account_a_session_and_tokens() {
    let server = spawn_server().await;
    let response = server
        .post(
            "/api/auth/register",
            &json!({"email": "Ada@Example.com", "password": "correct horse battery", "username": "ada",
                    "first_name": "Ada", "last_name": "Lovelace"}),
        )
        .await;
    let body = json(response, 201).await;
    assert_eq!(body["user"]["email"], "Ada@Example.com");
    assert_eq!(body["user"]["username"], "ada");
    assert_eq!(body["user"]["roles"], json!(["user"]));
    assert_eq!(body["user"]["email_verified"], false);
    assert!(body["user"].get("password_hash").is_none());
    assert_eq!(body["tokens"]["token_type"], "Bearer");
    assert_eq!(body["tokens"]["expires_in"], 900);
    assert_eq!(body["tokens"]["refresh_token"].as_str().unwrap().len(), 43);
    let sid = body["session"]["id"].as_str().unwrap();

    assert_eq!(count(&server, "users").await, 1);
    assert_eq!(count(&server, "sessions").await, 1);
    assert_eq!(count(&server, "refresh_tokens").await, 1);
    assert_eq!(audit_events(&server).await, ["user_registered"]);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_one(&mut crate::support::db(&server).await)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32, "only a SHA-256 of the refresh token is stored");

    let mut redis = server.redis().await;
    let mirror: String = redis::cmd("GET")
        .arg(format!("auth:session:{sid}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    let mirror: Value = serde_json::from_str(&mirror).unwrap();
    assert_eq!(mirror["user_id"], body["user"]["id"]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("auth:session:{sid}"))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=24 * 3600).contains(&ttl), "{ttl}");

    let me = server
        .get_auth("/api/auth/me", body["tokens"]["access_token"].as_str().unwrap())
        .await;
    assert_eq!(json(me, 200).await["id"], body["user"]["id"]);
}

#[tokio::test]
async fn an_email_taken_in_another_case_is_a_conflict_and_changes_nothing() {
    let server = spawn_server().await;
    server
        .register("grace@example.com", "correct horse battery")
        .await;
    let response = server
        .post(
            "/api/auth/register",
            &json!({"email": "GRACE@example.COM", "password": "another good secret"}),
        )
        .await;
    let body = problem(response, 409).await;
    assert_eq!(fields(&body), ["email"]);
    assert_eq!(count(&server, "users").await, 1);
    assert_eq!(count(&server, "sessions").await, 1);
}

#[tokio::test]
async fn a_taken_username_is_a_conflict() {
    let server = spawn_server().await;
    let first = json!({"email": "a@example.com", "password": "correct horse battery", "username": "Neo"});
    assert_eq!(server.post("/api/auth/register", &first).await.status(), 201);
    let second = json!({"email": "b@example.com", "password": "correct horse battery", "username": "neo"});
    assert_eq!(
        fields(&problem(server.post("/api/auth/register", &second).await, 409).await),
        ["username"]
    );
    assert_eq!(count(&server, "users").await, 1);
}

#[tokio::test]
async fn invalid_fields_are_422_with_every_field_named_and_nothing_stored() {
    let server = spawn_server().await;
    let cases = [
        (
            json!({"email": "not-an-email", "password": "correct horse battery"}),
            vec!["email"],
        ),
        (
            json!({"email": "a@example.com", "password": "short"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": "x".repeat(73)}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": "Password123"}),
            vec!["password"],
        ),
        (
            json!({"email": "a@example.com", "password": "correct horse battery", "username": "a b"}),
            vec!["username"],
        ),
        (
            json!({"email": "bad", "password": "12345678", "first_name": ""}),
            vec!["email", "password", "first_name"],
        ),
    ];
    for (body, expected) in cases {
        let problem = problem(server.post("/api/auth/register", &body).await, 422).await;
        assert_eq!(fields(&problem), expected, "{body}");
    }
    assert_eq!(count(&server, "users").await, 0);
}

#[tokio::test]
async fn seventy_two_bytes_is_the_longest_password() {
    let server = spawn_server().await;
    let password = "ü".repeat(36);
    assert_eq!(password.len(), 72);
    let body = json!({"email": "long@example.com", "password": password});
    assert_eq!(server.post("/api/auth/register", &body).await.status(), 201);
    let login = json!({"email": "long@example.com", "password": format!("{password}")});
    assert_eq!(server.post("/api/auth/login", &login).await.status(), 200);
    let truncated = json!({"email": "long@example.com", "password": "ü".repeat(35)});
    assert_eq!(server.post("/api/auth/login", &truncated).await.status(), 401);
}

#[tokio::test]
async fn malformed_bodies_and_wrong_types_are_400_and_store_nothing() {
    let server = spawn_server().await;
    let raw = |body: &'static str| {
        server
            .request(Method::POST, "/api/auth/register")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let wrong_type = problem(
        raw(r#"{"email": 5, "password": "correct horse battery"}"#)
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(fields(&wrong_type), ["email"]);
    assert!(
        wrong_type["detail"]
            .as_str()
            .unwrap()
            .contains("expected a string")
    );
    let missing = problem(raw(r#"{"email": "a@example.com"}"#).await.unwrap(), 400).await;
    assert!(
        missing["detail"]
            .as_str()
            .unwrap()
            .contains("missing field `password`")
    );
    let unknown = problem(
        raw(r#"{"email":"a@example.com","password":"correct horse battery","roles":["admin"]}"#)
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        unknown["detail"]
            .as_str()
            .unwrap()
            .contains("unknown field `roles`")
    );
    for body in ["not json", "[]", "{\"email\":", "null", "{} {}"] {
        problem(raw(body).await.unwrap(), 400).await;
    }
    let no_body = server
        .request(Method::POST, "/api/auth/register")
        .send()
        .await
        .unwrap();
    problem(no_body, 400).await;
    let text = server
        .request(Method::POST, "/api/auth/register")
        .header("content-type", "text/plain")
        .body(r#"{"email":"a@example.com","password":"correct horse battery"}"#)
        .send()
        .await
        .unwrap();
    problem(text, 400).await;
    assert_eq!(count(&server, "users").await, 0);
}

#[tokio::test]
async fn oversized_bodies_are_413_with_or_without_a_length() {
    let server = spawn_server().await;
    let huge = json!({"email": "a@example.com", "password": "correct horse battery", "first_name": "x".repeat(100_000)});
    problem(server.post("/api/auth/register", &huge).await, 413).await;

    let chunks: Vec<Result<String, std::io::Error>> = (0..100).map(|_| Ok("x".repeat(1024))).collect();
    let chunked = server
        .request(Method::POST, "/api/auth/register")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(chunked, 413).await;
    assert_eq!(count(&server, "users").await, 0);
}
