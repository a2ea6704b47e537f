//! The HTTP surface: the OpenAPI document, Swagger UI, errors, metrics, dependencies down.

use std::process::Command;
use std::time::Duration;

use platform_tests::RedisServer;
use platform_tests::server::{spawn_server, spawn_server_with, start};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{json, problem};

#[tokio::test]
async fn the_openapi_document_is_valid_and_documents_every_route_and_error() {
    let server = spawn_server().await;
    let text = server.get_text("/openapi.json").await;
    let spec: Value = serde_json::from_str(&text).unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        spec["components"]["securitySchemes"]["BearerAuth"]["scheme"],
        "bearer"
    );

    let expected = [
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("post", "/api/auth/refresh"),
        ("post", "/api/auth/logout"),
        ("post", "/api/auth/logout-all"),
        ("get", "/api/auth/me"),
        ("get", "/api/auth/sessions"),
        ("delete", "/api/auth/sessions/{id}"),
        ("post", "/api/auth/change-password"),
        ("get", "/api/users/profile"),
        ("put", "/api/users/profile"),
        ("delete", "/api/users/account"),
        ("get", "/.well-known/jwks.json"),
        ("get", "/.well-known/openid-configuration"),
        ("get", "/api/health"),
        ("get", "/api/health/live"),
        ("get", "/api/health/ready"),
        ("get", "/api/health/database"),
    ];
    for (method, path) in expected {
        let operation = &spec["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        assert!(operation["summary"].is_string(), "{method} {path} has no summary");
        let responses = operation["responses"].as_object().unwrap();
        if !path.starts_with("/api/health") {
            assert!(responses.contains_key("500"), "{method} {path} lacks 500");
            let problem = &responses["500"]["content"]["application/problem+json"]["schema"]["$ref"];
            assert_eq!(problem, "#/components/schemas/Problem", "{method} {path}");
        }
        let secured = operation["security"].is_array();
        let public = ["/register", "/login", "/refresh", "/.well-known", "/api/health"]
            .iter()
            .any(|p| path.contains(p));
        assert_eq!(secured, !public, "{method} {path} security");
        if secured {
            assert!(responses.contains_key("401"), "{method} {path} lacks 401");
            assert!(
                responses["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{method} {path}"
            );
        }
    }
    let register = &spec["paths"]["/api/auth/register"]["post"]["responses"];
    for status in ["201", "400", "409", "413", "422", "429", "503"] {
        assert!(register[status].is_object(), "register lacks {status}");
    }

    // Every operation has its own id (client generators name methods after it), and every link
    // leads to one of them.
    let operations: Vec<&Value> = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .collect();
    let ids: std::collections::HashSet<&str> = operations
        .iter()
        .map(|operation| operation["operationId"].as_str().expect("an operationId"))
        .collect();
    assert_eq!(ids.len(), operations.len(), "operationIds are unique");
    let targets: Vec<&str> = operations
        .iter()
        .flat_map(|operation| operation["responses"].as_object().unwrap().values())
        .flat_map(|response| response["links"].as_object().into_iter().flatten())
        .map(|(_, link)| link["operationId"].as_str().unwrap())
        .collect();
    assert!(targets.len() >= 10, "the ids in answers are linked: {targets:?}");
    assert!(targets.iter().all(|target| ids.contains(target)), "{targets:?}");
    assert!(
        server.get_text("/docs/").await.contains(&text),
        "Swagger UI shows the document /openapi.json serves"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let validated = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(file.path())
        .output()
        .expect("python3 runs");
    assert!(
        validated.status.success(),
        "openapi-spec-validator refused the document (pip install openapi-spec-validator):\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
}

#[tokio::test]
async fn swagger_ui_renders_every_operation_in_a_real_browser() {
    let server = spawn_server().await;
    let profile = tempfile::tempdir().unwrap();
    let chromium = platform_tests::process::find_binary(
        "chromium",
        &[],
        "install Chromium (apt-get install -y chromium)",
    );
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{}/docs/", server.url))
        .output()
        .await
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("swagger-ui"),
        "no Swagger UI in the DOM:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let operations = dom.matches("opblock-summary-path").count();
    assert!(operations >= 18, "Swagger UI shows {operations} operations");
    for path in [
        "/api/auth/login",
        "/api/auth/sessions/{id}",
        "/.well-known/jwks.json",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} not rendered"
        );
    }
    assert!(
        dom.contains("Authorize"),
        "the bearer scheme can be entered from the page"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_documents() {
    let server = spawn_server().await;
    problem(
        server
            .request(Method::GET, "/api/nothing-here")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let wrong_method = server
        .request(Method::GET, "/api/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["content-type"], "application/problem+json");
    assert_eq!(
        wrong_method.headers()["allow"],
        "OPTIONS, POST",
        "RFC 9110 requires Allow on a 405"
    );
    let session = format!("/api/auth/sessions/{}", uuid::Uuid::new_v4());
    let wrong_method = server.request(Method::PATCH, &session).send().await.unwrap();
    assert_eq!(wrong_method.status(), 405);
    assert_eq!(wrong_method.headers()["allow"], "DELETE, OPTIONS");
    let profile = server
        .request(Method::POST, "/api/users/profile")
        .send()
        .await
        .unwrap();
    assert_eq!(profile.headers()["allow"], "GET, HEAD, OPTIONS, PUT");
}

#[tokio::test]
async fn requests_carry_an_id_and_metrics_use_route_templates() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let traced = server
        .request(Method::GET, "/api/auth/me")
        .bearer_auth(&user.access)
        .header("x-request-id", "trace-123")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-request-id"], "trace-123");
    let generated = server.request(Method::GET, "/api/auth/me").send().await.unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 36);
    let path = format!("/api/auth/sessions/{}", user.session);
    server
        .request(Method::DELETE, &path)
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();

    let metrics = server.metrics().await;
    for expected in [
        "auth_server_http_requests_total{method=\"POST\",route=\"/api/auth/register\",status=\"201\"} 1",
        "auth_server_http_requests_total{method=\"DELETE\",route=\"/api/auth/sessions/{id}\",status=\"204\"} 1",
        "auth_server_http_request_duration_seconds_bucket",
        "auth_server_tokens_issued_total{grant=\"register\"} 1",
        "auth_server_revocations_total{kind=\"sid\"} 1",
        "auth_server_password_hash_queue_depth 0",
        "auth_server_pool_connections{pool=\"database\",state=\"max\"} 20",
    ] {
        assert!(metrics.contains(expected), "missing {expected}\n{metrics}");
    }
    assert!(!metrics.contains(&user.session), "no raw ids in labels");
}

#[tokio::test]
async fn redis_down_means_503_where_it_is_needed_never_a_panic_and_service_resumes() {
    let mut redis = RedisServer::start();
    let db = platform_tests::migrated_database().await;
    let server = start(db, &redis.url(0), |s| {
        s.dependency_timeout = Duration::from_millis(500)
    })
    .await;
    let user = server.new_user().await;
    let other = server.login(&user).await;
    redis.kill();
    // Logins need the rate limiter, which lives in Redis: refused rather than unprotected.
    let credentials = json!({"email": user.email, "password": user.password});
    let login = server.post("/api/auth/login", &credentials).await;
    assert_eq!(login.headers()["retry-after"], "1");
    problem(login, 503).await;
    let ready = server
        .client
        .get(format!("{}/api/health/ready", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    // Bearer checks fall back to the durable revocations in PostgreSQL.
    assert_eq!(server.get_auth("/api/auth/me", &user.access).await.status(), 200);
    // A logout is done only once every sidecar can know it: without Redis, nothing changes.
    let logout = server.logout(&other.access).await;
    assert_eq!(logout.headers()["retry-after"], "1");
    problem(logout, 503).await;
    assert_eq!(server.get_auth("/api/auth/me", &other.access).await.status(), 200);

    redis.restart();
    server.wait_until_ready().await;
    json(server.post("/api/auth/login", &credentials).await, 200).await;
    let logout = server.logout(&other.access).await;
    assert_eq!(logout.status(), 204);
    problem(server.get_auth("/api/auth/me", &other.access).await, 401).await;
    // Answered only once published.
    let token = crate::support::verified(&server, &other.access).await;
    let keys = auth_core::revocation::RedisKeys::default();
    for _ in 0..100 {
        if matches!(
            auth_core::revocation::lookup(&mut server.redis().await, &keys, &token)
                .await
                .unwrap(),
            auth_core::revocation::LookupOutcome::Revoked(_)
        ) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the acknowledged logout was never published");
}

#[tokio::test]
async fn the_database_down_means_503_with_a_clear_problem() {
    let redis = platform_tests::test_redis();
    let unreachable = platform_tests::TestDatabase {
        name: "gone".into(),
        url: format!(
            "postgres://postgres@127.0.0.1:{}/gone",
            platform_tests::process::free_port()
        ),
    };
    let mut settings = platform_tests::server::test_settings(&unreachable, &redis.url);
    settings.dependency_timeout = Duration::from_millis(300);
    let app = auth_server::startup::Application::build(settings).await.unwrap();
    let url = format!("http://{}", app.public_addr());
    let (trigger, shutdown) = auth_core::shutdown::channel();
    let task = tokio::spawn(app.run(shutdown));
    let client = reqwest::Client::new();
    let register = client
        .post(format!("{url}/api/auth/register"))
        .json(&json!({"email": "a@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    let body = problem(register, 503).await;
    assert_eq!(body["detail"], "the database is unavailable; retry shortly");
    let health = json(
        client
            .get(format!("{url}/api/health/database"))
            .send()
            .await
            .unwrap(),
        503,
    )
    .await;
    assert_eq!(health["status"], "failing");
    // Anyone may ask: what fails is said, never why (the admin port says why).
    let ready = client
        .get(format!("{url}/api/health/ready"))
        .send()
        .await
        .unwrap();
    let text = ready.text().await.unwrap();
    assert!(text.contains("failing"), "{text}");
    assert!(!text.contains("reason") && !text.contains("127.0.0.1"), "{text}");
    trigger.trigger();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn anonymous_health_checks_share_one_evaluation_per_second() {
    let server = spawn_server().await;
    let asks = (0..50).map(|_| {
        server
            .client
            .get(format!("{}/api/health/database", server.url))
            .send()
    });
    let mut latencies = std::collections::BTreeSet::new();
    for answer in futures_util::future::join_all(asks).await {
        let health = json(answer.unwrap(), 200).await;
        latencies.insert(health["latency_ms"].to_string());
    }
    // Each measurement of `SELECT 1` has its own nanosecond-precise latency: fifty callers
    // within a second saw one or two measurements, not fifty.
    assert!(
        latencies.len() <= 2,
        "{} measurements for 50 callers",
        latencies.len()
    );
}

#[tokio::test]
async fn a_nul_character_anywhere_is_a_400_naming_the_field_never_a_500() {
    let server = spawn_server().await;
    let user = server.new_user().await;
    let login = server
        .post(
            "/api/auth/login",
            &json!({"email": "a\u{0}@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(problem(login, 400).await["errors"][0]["field"], "email");
    let profile = server
        .request(reqwest::Method::PUT, "/api/users/profile")
        .bearer_auth(&user.access)
        .json(&json!({"profile": {"bio": ["fine", "not\u{0}fine"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        problem(profile, 400).await["errors"][0]["field"],
        "profile.bio[1]"
    );
}

#[tokio::test]
async fn invented_methods_share_one_metric_label() {
    let server = spawn_server().await;
    for method in ["FOO1", "FOO2", "BREW"] {
        let answer = server
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                "/api/auth/me",
            )
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_client_error());
    }
    let metrics = server.metrics().await;
    assert!(
        !metrics.contains("FOO1") && !metrics.contains("BREW"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
}

#[tokio::test]
async fn the_health_routes_report_components_and_pool_statistics() {
    let server = spawn_server().await;
    let health = json(
        server
            .client
            .get(format!("{}/api/health", server.url))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(health["status"], "ready");
    let names: Vec<&str> = health["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["revocations_restored", "database", "schema", "redis"]);
    let live = json(
        server
            .client
            .get(format!("{}/api/health/live", server.url))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(live["status"], "alive");
    let database = json(
        server
            .client
            .get(format!("{}/api/health/database", server.url))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert!(database["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(database["pool_max"], 20);
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let server = spawn_server_with(|s| {
        s.bcrypt_cost = 10;
        s.hash_concurrency = 1;
        s.hash_queue_limit = 0;
    })
    .await;
    let server = &server;
    let attempts = (0..8).map(|i| async move {
        let body = json!({"email": format!("n{i}@example.com"), "password": "whatever it is"});
        server.post("/api/auth/login", &body).await
    });
    let statuses: Vec<u16> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status().as_u16())
        .collect();
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 503 || *s == 401), "{statuses:?}");
}

#[tokio::test]
async fn options_and_head_are_answered_as_rfc_9110_says() {
    let server = spawn_server().await;
    let options = server
        .request(Method::OPTIONS, "/api/users/profile")
        .send()
        .await
        .unwrap();
    assert_eq!(options.status(), 204);
    assert_eq!(options.headers()["allow"], "GET, HEAD, OPTIONS, PUT");
    let unknown = server
        .request(Method::OPTIONS, "/api/nothing-here")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let get = server
        .request(Method::GET, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    let get_headers = get.headers().clone();
    let head = server
        .request(Method::HEAD, "/.well-known/jwks.json")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-type"], get_headers["content-type"]);
    assert_eq!(head.headers()["cache-control"], get_headers["cache-control"]);
    assert!(head.bytes().await.unwrap().is_empty(), "no body");
    let login = server
        .request(Method::HEAD, "/api/auth/login")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 405, "HEAD only where GET is");
    assert_eq!(login.headers()["allow"], "OPTIONS, POST");
}
