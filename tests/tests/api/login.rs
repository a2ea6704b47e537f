use platform_tests::server::spawn_server;
use serde_json::json;
use sqlx::Row;

use crate::support::{audit_events, db, fields, json, problem};

#[tokio::test]
async fn login_works_by_email_in_any_case_and_by_username() {
    let server = spawn_server().await;
    let body = json!({"email": "kim@example.com", "password": "correct horse battery", "username": "kim"});
    assert_eq!(server.post("/api/auth/register", &body).await.status(), 201);

    for credentials in [
        json!({"email": "KIM@example.com", "password": "correct horse battery"}),
        json!({"username": "Kim", "password": "correct horse battery"}),
    ] {
        let body = json(server.post("/api/auth/login", &credentials).await, 200).await;
        assert_eq!(body["user"]["email"], "kim@example.com");
        assert!(body["tokens"]["access_token"].is_string());
    }
    let row = sqlx::query("SELECT last_login_at IS NOT NULL AS logged_in, failed_login_count FROM users")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert!(row.get::<bool, _>("logged_in"));
    assert_eq!(row.get::<i32, _>("failed_login_count"), 0);
    assert_eq!(
        audit_events(&server).await,
        ["user_registered", "login_succeeded", "login_succeeded"]
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_account_get_the_identical_answer() {
    let server = spawn_server().await;
    server.register("lee@example.com", "correct horse battery").await;
    let wrong = server
        .post(
            "/api/auth/login",
            &json!({"email": "lee@example.com", "password": "wrong horse battery"}),
        )
        .await;
    assert_eq!(
        wrong.headers()["www-authenticate"],
        "Bearer realm=\"auth-platform\""
    );
    let wrong = problem(wrong, 401).await;
    let unknown = server
        .post(
            "/api/auth/login",
            &json!({"email": "nobody@example.com", "password": "wrong horse battery"}),
        )
        .await;
    let unknown = problem(unknown, 401).await;
    assert_eq!(
        wrong, unknown,
        "the answer must not reveal whether the account exists"
    );
    assert!(!wrong.to_string().contains("password"), "{wrong}");

    let failures: i32 = sqlx::query_scalar("SELECT failed_login_count FROM users")
        .fetch_one(&mut db(&server).await)
        .await
        .unwrap();
    assert_eq!(failures, 1);
    let reasons: Vec<String> = sqlx::query_scalar(
        "SELECT data->>'reason' FROM audit_logs WHERE event_type = 'login_failed' ORDER BY id",
    )
    .fetch_all(&mut db(&server).await)
    .await
    .unwrap();
    assert_eq!(reasons, ["wrong_password", "unknown_account"]);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("auth_server_logins_total{result=\"invalid_credentials\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn email_and_username_together_or_neither_is_a_validation_error() {
    let server = spawn_server().await;
    for body in [
        json!({"email": "a@example.com", "username": "a", "password": "x"}),
        json!({"password": "x"}),
    ] {
        assert_eq!(
            fields(&problem(server.post("/api/auth/login", &body).await, 422).await),
            ["email"]
        );
    }
}
