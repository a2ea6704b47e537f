//! The real images, built with the project's Dockerfile, and the Helm chart's rendered pods run as
//! containers against a real PostgreSQL and Redis: the migration hook Job first, then the server
//! (its init container waiting for the schema), then a demo app behind the rendered sidecar —
//! each pod ready by its own probes, a user registering through the API, the app answering 200 with
//! a token and 401 after logout.

use std::time::Duration;

use auth_server::cluster::webhook::inject::{Injector, Scope};
use platform_tests::containers::{Podman, REGISTRY, TAG};
use platform_tests::pods::Cluster;
use platform_tests::process::free_port;
use platform_tests::tools::{injector_template, render, yaml_documents};
use platform_tests::{RedisServer, empty_database};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(90);

fn find<'d>(documents: &'d [Value], kind: &str, suffix: &str) -> &'d Value {
    documents
        .iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {kind} *{suffix} rendered"))
}

/// Runs a pod of a plain Deployment (the demo app alone) after the injection webhook patched it,
/// with the sidecar template the chart renders in Kubernetes mode; returns the sidecar's URL.
async fn run_injected_pod(
    cluster: &mut Cluster<'_>,
    documents: &[Value],
    values: &Value,
    redis: &RedisServer,
) -> String {
    let (app_port, http, admin) = (free_port(), free_port(), free_port());
    let mut injecting = values.clone();
    injecting["signingKeys"] = json!({"mode": "kubernetes"});
    injecting["injector"] = json!({"enabled": true});
    injecting["verifier"]["ports"] = json!({"http": http, "admin": admin});
    let rendered = yaml_documents(&render_values(&injecting));
    let injector = Injector {
        template: injector_template(&rendered),
        native_sidecars: true,
    };

    let example = find(documents, "Deployment", "-example-app");
    let mut app = example["spec"]["template"]["spec"]["containers"][0].clone();
    app["args"] = json!(["--port", app_port.to_string()]);
    app["ports"] = json!([{"name": "app", "containerPort": app_port, "protocol": "TCP"}]);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "shop-", "namespace": "shop", "labels": {"app": "shop", "auth-platform.io/inject": "true"}},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": example["spec"]["template"]["spec"]["securityContext"],
            "containers": [app],
        },
    });
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "4b0c1e2a-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        },
    });
    let answer =
        serde_json::to_value(injector.review(&serde_json::to_vec(&review).unwrap(), Scope::Annotated))
            .unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch: Vec<u8> = serde_json::from_value(answer["response"]["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "token-verifier");

    cluster.add_secret("auth-platform-redis", &[("url", redis.url(0).as_bytes())]);
    let workload = json!({"metadata": {"name": "shop"}, "spec": {"template": {"spec": pod["spec"]}}});
    let running = cluster.start(&workload, READY).await;
    cluster.wait_ready(&running, READY).await;
    format!("http://127.0.0.1:{http}")
}

fn render_values(values: &Value) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), values.to_string()).unwrap();
    render(file.path(), &[])
}

#[tokio::test]
async fn the_images_and_the_charts_pods_run_as_specified() {
    let podman = Podman::new();
    let base = podman.build_base();
    podman.build_images(&base);
    for program in ["auth-server", "token-verifier", "migrator"] {
        let image = podman.inspect(&format!("{REGISTRY}/{program}:{TAG}"));
        let config = &image["Config"];
        assert_eq!(config["User"], "65532:65532", "{program}");
        assert_eq!(
            config["Entrypoint"],
            json!([format!("/usr/local/bin/{program}")]),
            "{program}"
        );
        let labels = &config["Labels"];
        assert_eq!(labels["org.opencontainers.image.title"], program);
        assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
        assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
        assert!(
            labels["org.opencontainers.image.source"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
        // Distroless: no shell to run.
        let shell = podman
            .command("podman")
            .args(["run", "--rm", "--entrypoint", "/bin/sh"])
            .arg(format!("{REGISTRY}/{program}:{TAG}"))
            .args(["-c", "true"])
            .output()
            .unwrap();
        assert!(!shell.status.success(), "{program} has a shell");
    }

    let db = empty_database().await;
    let redis = RedisServer::start();
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let values = json!({
        "image": {"registry": REGISTRY, "tag": TAG},
        "evaluation": {"enabled": false},
        "database": {"url": db.url},
        "redis": {"url": redis.url(0)},
        "server": {
            "replicas": 1,
            "bcryptCost": 4,
            "issuer": "http://auth.test",
            "ports": {"http": ports[0], "admin": ports[1]},
            "podDisruptionBudget": {"enabled": false}
        },
        "verifier": {"ports": {"http": ports[2], "admin": ports[3]}},
        "exampleApp": {
            "enabled": true,
            "image": format!("{REGISTRY}/example-app:{TAG}"),
            "port": ports[4],
            "rules": [{"path": "/admin", "roles": ["admin"]}]
        }
    });
    let manifests = render_values(&values);
    let documents = yaml_documents(&manifests);
    let mut cluster = Cluster::new(&podman, &documents, "auth-platform");

    // Helm's order: the pre-install hooks (the Secrets, then the migration Job), then the rest.
    cluster.run_job(find(&documents, "Job", "-migrate"));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(applied, 8, "the hook Job migrated the empty database");

    let server = cluster
        .start(find(&documents, "Deployment", "-server"), READY)
        .await;
    cluster.wait_ready(&server, READY).await;
    let app = cluster
        .start(find(&documents, "Deployment", "-example-app"), READY)
        .await;
    cluster.wait_ready(&app, READY).await;

    // The posture podman applied is the one the manifest asked for.
    let running = cluster.inspect(&format!("{}-auth-server", server.name));
    assert_eq!(running["Config"]["User"], "65532:65532");
    assert_eq!(running["HostConfig"]["ReadonlyRootfs"], true);
    assert!(
        running["HostConfig"]["SecurityOpt"]
            .to_string()
            .contains("no-new-privileges")
    );
    let pid = running["State"]["Pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(field("CapEff:"), "0000000000000000", "every capability dropped");
    assert_eq!(field("NoNewPrivs:"), "1");
    assert!(field("Uid:").starts_with("65532"), "{}", field("Uid:"));

    let client = reqwest::Client::new();
    let api = format!("http://127.0.0.1:{}", ports[0]);
    let registered: Value = client
        .post(format!("{api}/api/auth/register"))
        .json(&json!({"email": "kube@example.com", "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["tokens"]["access_token"]
        .as_str()
        .expect("registered")
        .to_owned();
    let user = registered["user"]["id"].as_str().unwrap().to_owned();

    let app_url = format!("http://127.0.0.1:{}", ports[2]);
    let seen: Value = client
        .get(format!("{app_url}/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        seen["user"],
        user.as_str(),
        "the app sees the identity the sidecar vouches for"
    );
    assert_eq!(
        client
            .get(format!("{app_url}/orders"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let admin = client
        .get(format!("{app_url}/admin"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 403, "the role rule from the values");

    // A service deployed without any sidecar, injected by the webhook: its pod as the API server
    // sends it in an AdmissionReview, the webhook's patch applied, and the result run.
    let injected_url = run_injected_pod(&mut cluster, &documents, &values, &redis).await;
    let seen = client
        .get(format!("{injected_url}/orders"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(seen.status(), 200, "the injected sidecar vouches for the token");
    let seen: Value = seen.json().await.unwrap();
    assert_eq!(seen["user"], user.as_str());
    let anonymous = client.get(format!("{injected_url}/orders")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "and refuses a request without one");

    let logout = client
        .post(format!("{api}/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let started = std::time::Instant::now();
    loop {
        let status = client
            .get(format!("{app_url}/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {status} after logout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
