//! Listing and revoking one's sessions.

use platform_tests::server::spawn_server;
use reqwest::Method;
use serde_json::json;

use crate::support::{json, problem};

#[tokio::test]
async fn sessions_are_listed_newest_first_with_the_current_one_marked() {
    let server = spawn_server().await;
    let laptop = server.new_user().await;
    let phone = server
        .client
        .post(format!("{}/api/auth/login", server.url))
        .header("user-agent", "phone/1.0")
        .json(&json!({"email": laptop.email, "password": laptop.password}))
        .send()
        .await
        .unwrap();
    let phone = json(phone, 200).await;
    let list = json(server.get_auth("/api/auth/sessions", &laptop.access).await, 200).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], phone["session"]["id"]);
    assert_eq!(list[0]["user_agent"], "phone/1.0");
    assert_eq!(list[0]["ip"], "127.0.0.1");
    assert_eq!(list[0]["current"], false);
    assert_eq!(list[1]["id"], laptop.session.as_str());
    assert_eq!(list[1]["current"], true);
    for field in ["created_at", "last_used_at", "expires_at"] {
        assert!(list[0][field].is_string(), "{field}");
    }
}

#[tokio::test]
async fn revoking_a_session_ends_it_and_leaves_the_others() {
    let server = spawn_server().await;
    let laptop = server.new_user().await;
    let phone = server.login(&laptop).await;
    let path = format!("/api/auth/sessions/{}", phone.session);
    let revoked = server
        .request(Method::DELETE, &path)
        .bearer_auth(&laptop.access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    problem(server.get_auth("/api/auth/me", &phone.access).await, 401).await;
    problem(
        server
            .post("/api/auth/refresh", &json!({"refresh_token": phone.refresh}))
            .await,
        401,
    )
    .await;
    assert_eq!(
        server.get_auth("/api/auth/me", &laptop.access).await.status(),
        200
    );
    let list = json(server.get_auth("/api/auth/sessions", &laptop.access).await, 200).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    let again = server
        .request(Method::DELETE, &path)
        .bearer_auth(&laptop.access)
        .send()
        .await
        .unwrap();
    problem(again, 404).await;
}

#[tokio::test]
async fn another_users_session_or_a_bad_id_cannot_be_revoked() {
    let server = spawn_server().await;
    let alice = server.new_user().await;
    let mallory = server.new_user().await;
    let path = format!("/api/auth/sessions/{}", alice.session);
    let response = server
        .request(Method::DELETE, &path)
        .bearer_auth(&mallory.access)
        .send()
        .await
        .unwrap();
    problem(response, 404).await;
    assert_eq!(server.get_auth("/api/auth/me", &alice.access).await.status(), 200);
    let bad = server
        .request(Method::DELETE, "/api/auth/sessions/not-a-uuid")
        .bearer_auth(&mallory.access)
        .send()
        .await
        .unwrap();
    problem(bad, 400).await;
    let anonymous = server.request(Method::DELETE, &path).send().await.unwrap();
    problem(anonymous, 401).await;
}
