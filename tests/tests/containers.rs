//! The real images, built with the project's Dockerfile, and the Helm chart's rendered pods run as
//! containers against a real PostgreSQL and Redis: the migration hook Job first, then the server
//! (its init container waiting for the schema), then a demo app behind the rendered sidecar —
//! each pod ready by its own probes, a user registering through the API, the app answering 200 with
//! a token and 401 after logout.

use std::time::Duration;

use platform_tests::containers::{Podman, REGISTRY, TAG};
use platform_tests::pods::Cluster;
use platform_tests::process::free_port;
use platform_tests::tools::{helm, output_of, yaml_documents};
use platform_tests::{RedisServer, empty_database};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(90);

fn find<'d>(documents: &'d [Value], kind: &str, suffix: &str) -> &'d Value {
    documents
        .iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no {kind} *{suffix} rendered"))
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
    let values_file = podman.dir().join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/auth-platform");
    let manifests = output_of(
        helm()
            .args(["template", "auth", "--namespace", "auth-platform"])
            .arg(&chart)
            .arg("-f")
            .arg(&values_file),
    );
    let documents = yaml_documents(&manifests);
    let mut cluster = Cluster::new(&podman, &documents, "auth-platform");

    // Helm's order: the pre-install hooks (the Secrets, then the migration Job), then the rest.
    cluster.run_job(find(&documents, "Job", "-migrate"));
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool().await)
        .await
        .unwrap();
    assert_eq!(applied, 6, "the hook Job migrated the empty database");

    let server = cluster.start(find(&documents, "Deployment", "-server"));
    cluster.wait_ready(&server, READY).await;
    let app = cluster.start(find(&documents, "Deployment", "-example-app"));
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
