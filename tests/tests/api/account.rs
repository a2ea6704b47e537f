//! Profile, password change and account deletion.

use platform_tests::server::spawn_server;
use reqwest::Method;
use serde_json::json;

use crate::support::{audit_events, count, fields, json, problem};

async fn put_profile(
    server: &platform_tests::server::TestServer,
    token: &str,
    body: serde_json::Value,
) -> reqwest::Response {
    server
        .request(Method::PUT, "/api/users/profile")
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_profile_updates_only_the_fields_given_and_null_clears() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let updated = put_profile(
        &server,
        &user.access,
        json!({"first_name": "Ada", "username": "ada", "profile": {"theme": "dark"}}),
    )
    .await;
    let updated = json(updated, 200).await;
    assert_eq!(updated["first_name"], "Ada");
    assert_eq!(updated["profile"], json!({"theme": "dark"}));
    let updated = json(
        put_profile(
            &server,
            &user.access,
            json!({"last_name": "Lovelace", "first_name": null}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(updated["first_name"], serde_json::Value::Null);
    assert_eq!(updated["last_name"], "Lovelace");
    assert_eq!(updated["username"], "ada", "untouched");
    let fetched = json(server.get_auth("/api/users/profile", &user.access).await, 200).await;
    assert_eq!(fetched, updated);
}

#[tokio::test]
async fn invalid_profile_changes_are_refused_and_change_nothing() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let other = server.new_user().await;
    json(
        put_profile(&server, &other.access, json!({"username": "taken"})).await,
        200,
    )
    .await;
    assert_eq!(
        fields(
            &problem(
                put_profile(&server, &user.access, json!({"username": "TAKEN"})).await,
                409
            )
            .await
        ),
        ["username"]
    );
    let invalid = problem(
        put_profile(
            &server,
            &user.access,
            json!({"username": "x", "first_name": "", "profile": [1]}),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(fields(&invalid), ["username", "first_name", "profile"]);
    problem(
        put_profile(
            &server,
            &user.access,
            json!({"profile": {"big": "x".repeat(20_000)}}),
        )
        .await,
        422,
    )
    .await;
    problem(
        put_profile(&server, &user.access, json!({"email": "new@example.com"})).await,
        400,
    )
    .await;
    let fetched = json(server.get_auth("/api/users/profile", &user.access).await, 200).await;
    assert_eq!(fetched["username"], serde_json::Value::Null);
    assert_eq!(fetched["email"], user.email.as_str());
}

#[tokio::test]
async fn changing_the_password_revokes_every_older_token_and_keeps_this_client_in() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let phone = server.login(&user).await;
    let change = async |current: &str, new: &str| {
        let body = json!({"current_password": current, "new_password": new});
        server
            .post_auth("/api/auth/change-password", &user.access, &body)
            .await
    };
    assert_eq!(
        fields(&problem(change("wrong password!", "a brand new secret").await, 422).await),
        ["current_password"]
    );
    assert_eq!(
        fields(&problem(change(&user.password, "password123").await, 422).await),
        ["new_password"]
    );
    assert_eq!(
        fields(&problem(change(&user.password, &user.password).await, 422).await),
        ["new_password"]
    );

    let changed = json(change(&user.password, "a brand new secret").await, 200).await;
    let fresh = changed["tokens"]["access_token"].as_str().unwrap();
    assert_eq!(
        server.get_auth("/api/auth/me", fresh).await.status(),
        200,
        "issued after the revocation instant"
    );
    for old in [&user, &phone] {
        problem(server.get_auth("/api/auth/me", &old.access).await, 401).await;
        problem(
            server
                .post("/api/auth/refresh", &json!({"refresh_token": old.refresh}))
                .await,
            401,
        )
        .await;
    }
    problem(
        server
            .post(
                "/api/auth/login",
                &json!({"email": user.email, "password": user.password}),
            )
            .await,
        401,
    )
    .await;
    json(
        server
            .post(
                "/api/auth/login",
                &json!({"email": user.email, "password": "a brand new secret"}),
            )
            .await,
        200,
    )
    .await;
    assert!(
        audit_events(&server)
            .await
            .contains(&"password_changed".to_owned())
    );
}

#[tokio::test]
async fn deleting_the_account_needs_the_password_and_revokes_everything() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let phone = server.login(&user).await;
    let delete = async |password: &str| {
        server
            .request(Method::DELETE, "/api/users/account")
            .bearer_auth(&user.access)
            .json(&json!({"password": password}))
            .send()
            .await
    };
    assert_eq!(
        fields(&problem(delete("not my password").await.unwrap(), 422).await),
        ["password"]
    );
    assert_eq!(server.get_auth("/api/auth/me", &user.access).await.status(), 200);

    assert_eq!(delete(&user.password).await.unwrap().status(), 204);
    for session in [&user, &phone] {
        problem(server.get_auth("/api/auth/me", &session.access).await, 401).await;
        problem(
            server
                .post("/api/auth/refresh", &json!({"refresh_token": session.refresh}))
                .await,
            401,
        )
        .await;
    }
    problem(
        server
            .post(
                "/api/auth/login",
                &json!({"email": user.email, "password": user.password}),
            )
            .await,
        401,
    )
    .await;
    assert_eq!(count(&server, "users").await, 1, "soft delete keeps the row");
    server.register(&user.email, "another good secret").await;
    assert_eq!(count(&server, "users").await, 2, "the address is free again");
    assert!(
        audit_events(&server)
            .await
            .contains(&"account_deleted".to_owned())
    );
}
