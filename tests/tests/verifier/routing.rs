//! Forward-auth: how the original request is described, public paths, role rules, token sources.

use jsonwebtoken::Algorithm;
use reqwest::Method;
use token_verifier::original::OriginalRequest;
use token_verifier::settings::RouteRule;

use crate::support::{Fixture, fixture, fixture_with};

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

fn rule(path: &str, methods: &[&str], roles: &[&str]) -> RouteRule {
    RouteRule {
        path: path.into(),
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

/// Asks the verifier at `path` with `method` and `headers`, with `token` if given.
async fn ask(
    fx: &Fixture,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = fx
        .verifier
        .client
        .request(method, format!("{}{path}", fx.verifier.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn each_proxy_describes_the_original_request_its_own_way() {
    type Describe = fn(&'static str, &'static str) -> (Method, String, Vec<(&'static str, &'static str)>);
    let flavours: [(OriginalRequest, Describe); 3] = [
        (OriginalRequest::XOriginal, |method, uri| {
            (
                Method::GET,
                "/verify".into(),
                vec![("x-original-method", method), ("x-original-uri", uri)],
            )
        }),
        (OriginalRequest::XForwarded, |method, uri| {
            (
                Method::GET,
                "/verify".into(),
                vec![("x-forwarded-method", method), ("x-forwarded-uri", uri)],
            )
        }),
        (OriginalRequest::Path, |method, uri| {
            (method.parse().unwrap(), format!("/verify{uri}"), vec![])
        }),
    ];
    for (source, describe) in flavours {
        let fx = fixture_with(Algorithm::RS256, |s| {
            s.original_request = source;
            s.rules = vec![rule("/reports", &["POST"], &["admin"]), admin_rule()];
        })
        .await;
        let token = Some(fx.user.access.as_str());
        for (method, uri, expected) in [
            ("GET", "/admin/users?page=2", 403),
            ("DELETE", "/admin", 403),
            ("GET", "/administrator", 200),
            ("GET", "/reports/1", 200),
            ("POST", "/reports/1", 403),
        ] {
            let (verb, path, headers) = describe(method, uri);
            let answer = ask(&fx, verb, &path, &headers, token).await;
            assert_eq!(answer.status(), expected, "{source:?} {method} {uri}");
            if expected == 403 {
                assert_eq!(
                    answer.headers()["www-authenticate"],
                    "Bearer realm=\"auth-platform\", error=\"insufficient_scope\""
                );
            }
        }
    }
}

#[tokio::test]
async fn only_the_configured_description_of_the_original_request_is_trusted() {
    // The review's attack: nginx sets X-Original-*, and passes the client's X-Forwarded-* along.
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.public_paths = vec!["/healthz".into()];
        s.rules = vec![admin_rule(), rule("/orders", &["GET"], &["user"])];
    })
    .await;
    let token = Some(fx.user.access.as_str());
    let nginx = [("x-original-method", "GET"), ("x-original-uri", "/admin/users")];
    for (headers, token, what) in [
        (
            vec![nginx[0], nginx[1], ("x-forwarded-uri", "/healthz")],
            None,
            "a smuggled public path",
        ),
        (
            vec![nginx[0], nginx[1], ("x-forwarded-uri", "/orders")],
            token,
            "a smuggled user path",
        ),
        (
            vec![
                ("x-original-method", "DELETE"),
                ("x-original-uri", "/orders/1"),
                ("x-forwarded-method", "GET"),
            ],
            token,
            "a smuggled method",
        ),
        (
            vec![nginx[0], nginx[1], ("x-original-uri", "/healthz")],
            None,
            "a second URI",
        ),
        (vec![("x-original-uri", "/healthz")], None, "no method"),
        (vec![], None, "no description at all"),
        (vec![nginx[0], ("x-original-uri", "")], None, "an empty URI"),
    ] {
        let answer = ask(&fx, Method::GET, "/verify", &headers, token).await;
        assert_eq!(answer.status(), 400, "{what}");
    }
    let suffix = ask(&fx, Method::GET, "/verify/healthz", &nginx, None).await;
    assert_eq!(
        suffix.status(),
        400,
        "a path after /verify is another description"
    );
    assert!(
        fx.verifier
            .metrics()
            .await
            .contains("verifier_decisions_total{result=\"bad_request\"} 8")
    );
}

#[tokio::test]
async fn method_overrides_cannot_escape_a_method_scoped_rule() {
    let fx = fixture_with(Algorithm::RS256, |s| {
        s.rules = vec![
            rule("/reports", &["DELETE"], &["admin"]),
            rule("/exports", &["GET"], &["admin"]),
        ];
    })
    .await;
    let token = Some(fx.user.access.as_str());
    let original = |method: &'static str, uri: &'static str| {
        vec![("x-original-method", method), ("x-original-uri", uri)]
    };
    for (mut headers, expected, what) in [
        (original("POST", "/reports/1"), 200, "a plain POST"),
        (original("DELETE", "/reports/1"), 403, "a DELETE"),
        (
            original("POST", "/reports/1?_method=DELETE"),
            403,
            "_method in the query",
        ),
        (
            original("POST", "/reports/1?_method=del%45te"),
            403,
            "an encoded _method",
        ),
        (original("HEAD", "/exports/1"), 403, "HEAD under a GET rule"),
    ] {
        headers.push(("x-request-id", "test"));
        let answer = ask(&fx, Method::GET, "/verify", &headers, token).await;
        assert_eq!(answer.status(), expected, "{what}");
    }
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "delete"),
        ("x-method-override", "DELETE"),
        ("content-type", "application/x-www-form-urlencoded"),
        ("content-type", "application/json"),
    ] {
        let mut headers = original("POST", "/reports/1");
        headers.push((name, value));
        let answer = ask(&fx, Method::GET, "/verify", &headers, token).await;
        assert_eq!(answer.status(), 403, "{name}: {value}");
    }
}

#[tokio::test]
async fn forged_identity_headers_in_any_spelling_are_refused() {
    let fx = fixture().await;
    for name in [
        "x-auth-user-id",
        "X-Auth-Roles",
        "x_auth_user_id",
        "X_AUTH_ROLES",
        "x-auth_email",
    ] {
        let response = fx
            .verifier
            .verify_request("/")
            .bearer_auth(&fx.user.access)
            .header(name, "00000000-0000-0000-0000-000000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name}");
    }
}

#[tokio::test]
async fn role_rules_see_the_roles_of_the_token() {
    let fx = fixture_with(Algorithm::RS256, |s| s.rules = vec![admin_rule()]).await;
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
        .verify_request("/admin/users")
        .bearer_auth(&admin.access)
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
        .verify_request("/public/logo.png")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("x-auth-user-id").is_none());
    let sneaky = fx
        .verifier
        .verify_request("/public/../admin")
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
        .verify_request("/")
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
    fx.server.logout(&fx.user.access).await;
    fx.verifier
        .wait_for_status(&fx.user.access, 401, std::time::Duration::from_secs(5))
        .await;
}
