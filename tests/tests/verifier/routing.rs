//! Forward-auth: how the original request is described, public paths, role rules, token sources.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use token_verifier::settings::RouteRule;

use crate::support::{fixture, fixture_with};

fn admin_rule() -> RouteRule {
    RouteRule {
        path: "/admin".into(),
        methods: vec![],
        roles: vec!["admin".into()],
    }
}

#[tokio::test]
async fn an_allowed_request_carries_the_identity_headers() {
    let fx = fixture().await;
    let response = fx.verifier.verify(&fx.user.access).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["x-auth-user-id"], fx.user.id.as_str());
    assert_eq!(headers["x-auth-session-id"], fx.user.session.as_str());
    assert_eq!(headers["x-auth-email"], fx.user.email.as_str());
    assert_eq!(headers["x-auth-roles"], "user");
}

#[tokio::test]
async fn role_rules_apply_to_the_original_method_and_path_however_described() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.rules = vec![
            RouteRule {
                path: "/reports".into(),
                methods: vec!["POST".into()],
                roles: vec!["admin".into()],
            },
            admin_rule(),
        ];
    })
    .await;
    let ask = async |method: Method, headers: &[(&str, &str)], path: &str| {
        let mut request = fx
            .verifier
            .client
            .request(method, format!("{}{path}", fx.verifier.url))
            .bearer_auth(&fx.user.access);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    };
    let traefik = ask(
        Method::GET,
        &[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/admin/users?page=2"),
        ],
        "/verify",
    )
    .await;
    assert_eq!(traefik.status(), 403);
    assert_eq!(
        traefik.headers()["www-authenticate"],
        "Bearer realm=\"auth-platform\", error=\"insufficient_scope\""
    );
    let nginx = ask(
        Method::GET,
        &[("x-original-method", "GET"), ("x-original-uri", "/admin")],
        "/verify",
    )
    .await;
    assert_eq!(nginx.status(), 403);
    let envoy = ask(Method::DELETE, &[], "/verify/admin/users/1").await;
    assert_eq!(envoy.status(), 403);
    let other = ask(Method::GET, &[("x-forwarded-uri", "/administrator")], "/verify").await;
    assert_eq!(other.status(), 200, "rules match whole path segments");
    let read = ask(
        Method::GET,
        &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/reports/1")],
        "/verify",
    )
    .await;
    assert_eq!(read.status(), 200, "the rule is for POST only");
    let write = ask(
        Method::GET,
        &[("x-forwarded-method", "POST"), ("x-forwarded-uri", "/reports/1")],
        "/verify",
    )
    .await;
    assert_eq!(write.status(), 403);

    sqlx::query("UPDATE users SET roles = ARRAY['user', 'admin']")
        .execute(
            &mut <sqlx::PgConnection as sqlx::Connection>::connect(&fx.server.db.url)
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    let admin = fx.server.login(&fx.user).await;
    let response = fx
        .verifier
        .client
        .get(format!("{}/verify", fx.verifier.url))
        .bearer_auth(&admin.access)
        .header("x-forwarded-uri", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-auth-roles"], "user,admin");
}

#[tokio::test]
async fn public_paths_need_no_token_and_get_no_identity() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.public_paths = vec!["/public".into(), "/healthz".into()]
    })
    .await;
    let response = fx
        .verifier
        .client
        .get(format!("{}/verify", fx.verifier.url))
        .header("x-forwarded-uri", "/public/logo.png")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-auth-user-id").is_none());
    let sneaky = fx
        .verifier
        .client
        .get(format!("{}/verify", fx.verifier.url))
        .header("x-forwarded-uri", "/public/../admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        sneaky.status(),
        400,
        "a path that resolves elsewhere upstream is refused"
    );
}

#[tokio::test]
async fn the_token_may_come_from_a_configured_cookie() {
    let fx = fixture_with(Algorithm::RS256, |s| s.token_cookie = Some("access_token".into())).await;
    let response = fx
        .verifier
        .client
        .get(format!("{}/verify", fx.verifier.url))
        .header("cookie", format!("theme=dark; access_token={}", fx.user.access))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_cached_token_is_verified_once_and_still_checked_for_revocation() {
    let fx = fixture().await;
    for _ in 0..5 {
        assert_eq!(fx.verifier.verify(&fx.user.access).await.status(), 200);
    }
    let metrics = fx.verifier.metrics().await;
    assert!(
        metrics.contains("verifier_token_cache_lookups_total{result=\"miss\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("verifier_token_cache_lookups_total{result=\"hit\"} 4"),
        "{metrics}"
    );
    // A different encoding of the same token is a different key and is verified afresh.
    let padded = format!("{}==", fx.user.access);
    fx.assert_refused(&padded).await;
    fx.server
        .post_auth("/api/auth/logout", &fx.user.access, &serde_json::json!({}))
        .await;
    fx.verifier
        .wait_for_status(&fx.user.access, 401, std::time::Duration::from_secs(5))
        .await;
}
