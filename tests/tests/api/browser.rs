//! What browsers get: security headers on every response, and CORS only for configured origins.

use platform_tests::server::{spawn_server, spawn_server_with};
use serde_json::json;

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_token_responses_are_never_cached() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let login = server
        .post(
            "/api/auth/login",
            &json!({ "email": user.email, "password": user.password }),
        )
        .await;
    let me = server.get_auth("/api/auth/me", &user.access).await;
    let refused = server.get_auth("/api/auth/me", "not-a-token").await;
    let missing = server
        .request(reqwest::Method::GET, "/api/nothing-here")
        .send()
        .await
        .unwrap();
    for response in [&login, &me, &refused, &missing] {
        assert_eq!(header(response, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(response, "referrer-policy"), Some("no-referrer"));
        assert_eq!(header(response, "x-frame-options"), Some("DENY"));
        assert_eq!(
            header(response, "cache-control"),
            Some("no-store"),
            "{}",
            response.url()
        );
        let policy = header(response, "content-security-policy").unwrap();
        assert!(policy.starts_with("default-src 'none'") && policy.contains("frame-ancestors 'none'"));
        assert_eq!(
            header(response, "strict-transport-security"),
            None,
            "not over http"
        );
    }
    let jwks = server
        .request(reqwest::Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&jwks, "cache-control"),
        Some("public, max-age=300"),
        "public keys stay cacheable"
    );
    let docs = server
        .request(reqwest::Method::GET, "/docs")
        .send()
        .await
        .unwrap();
    let policy = header(&docs, "content-security-policy").unwrap();
    assert!(
        policy.contains("script-src 'self' 'unsafe-inline'") && policy.contains("connect-src 'self'"),
        "{policy}"
    );
    // CORS is off unless configured: no browser on another origin may read anything.
    let preflight = server
        .request(reqwest::Method::OPTIONS, "/api/auth/login")
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_answers_the_configured_origins_only() {
    let server = spawn_server_with(|settings| {
        settings.issuer = "https://auth.example.com".to_owned();
        settings.cors.allowed_origins = vec!["https://app.example.com".to_owned()];
        settings.cors.allow_credentials = true;
    })
    .await;
    let preflight = |origin: &'static str| {
        server
            .request(reqwest::Method::OPTIONS, "/api/auth/login")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(header(&allowed, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&allowed, "access-control-max-age"), Some("600"));
    assert!(
        header(&allowed, "access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    let other = preflight("https://evil.example.com").await.unwrap();
    assert_eq!(
        header(&other, "access-control-allow-origin"),
        None,
        "another origin gets nothing"
    );

    let actual = server
        .request(reqwest::Method::GET, "/.well-known/jwks.json")
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&actual, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert!(header(&actual, "vary").is_some_and(|vary| vary.to_lowercase().contains("origin")));
    assert_eq!(
        header(&actual, "strict-transport-security"),
        Some("max-age=31536000; includeSubDomains"),
        "an https issuer is served over https"
    );
}
