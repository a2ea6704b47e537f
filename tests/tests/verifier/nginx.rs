//! Real nginx (Debian's package) doing `auth_request` against the verifier, configured as the
//! README says.

use std::time::Duration;

use platform_tests::nginx::Nginx;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Json;
use poem::{Request, Route, Server, handler};
use serde_json::{Value, json};

use crate::support::fixture;

#[handler]
fn whoami(req: &Request) -> Json<Value> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Json(
        json!({ "user": header("x-auth-user-id"), "email": header("x-auth-email"), "roles": header("x-auth-roles") }),
    )
}

#[tokio::test]
async fn nginx_auth_request_passes_the_identity_and_never_a_forged_one() {
    let fx = fixture().await;
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let app = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(Route::new().at("/*", whoami)));
    let nginx = Nginx::start(app, fx.verifier.url.trim_start_matches("http://"));

    let client = reqwest::Client::new();
    let url = format!("{}/orders", nginx.url());
    let seen: Value = client
        .get(&url)
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["user"], fx.user.id.as_str());
    assert_eq!(seen["email"], fx.user.email.as_str());
    assert_eq!(seen["roles"], "user");

    // A forged identity never reaches the app: refused, with or without a token.
    for token in [Some(fx.user.access.as_str()), None] {
        let mut request = client
            .get(&url)
            .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let forged = request.send().await.unwrap();
        assert!(!forged.status().is_success(), "{}", forged.status());
    }
    // The client's own Traefik-style description is cleared by the README's configuration.
    let smuggled = client
        .get(&url)
        .bearer_auth(&fx.user.access)
        .header("x-forwarded-uri", "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(smuggled.status(), 200);
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "nginx refuses without reaching the app");

    fx.server.logout(&fx.user.access).await;
    fx.verifier
        .wait_for_status(&fx.user.access, 401, Duration::from_secs(5))
        .await;
    let revoked = client
        .get(&url)
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 401);
}
