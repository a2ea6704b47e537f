//! Kubernetes mode end to end, with the real binaries: two auth-server replicas keep their keys
//! through a (stateful, in-memory) Kubernetes API server, a token verifier reads the JWKS from the
//! ConfigMap as the kubelet mounts it, and a rotation under load, a deleted Secret, a killed
//! leader and a compromised key are each survived without a failed verification.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use platform_tests::command::run;
use platform_tests::fake_api::{FakeApi, mirror_config_map};
use platform_tests::process::free_port;
use platform_tests::service::RunningService;
use platform_tests::verifier::{TestVerifier, start_verifier, verifier_settings};
use platform_tests::{migrated_database, test_redis};
use serde_json::{Value, json};

const NS: &str = "auth";
const SECRET: &str = "/api/v1/namespaces/auth/secrets/signing-keys";
const CONFIG_MAP: &str = "/api/v1/namespaces/auth/configmaps/jwks";
const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/auth/leases/leader";

/// The settings every replica and the CLI share.
struct Platform {
    env: Vec<(String, String)>,
}

impl Platform {
    fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.extend(
            extra
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        env
    }

    async fn replica(&self, identity: &str) -> (RunningService, String) {
        let port = free_port().to_string();
        let listen = format!("127.0.0.1:{port}");
        let env = self.env(&[("AUTH_LISTEN", &listen), ("AUTH_KUBERNETES__IDENTITY", identity)]);
        let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let service = RunningService::start("auth-server", "AUTH_", &borrowed).await;
        service.wait_for("/health/ready", 200).await;
        (service, format!("http://{listen}"))
    }

    async fn cli(&self, args: &[&str]) -> String {
        let env = self.env(&[]);
        let borrowed: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let finished = run("auth-server", args, &borrowed).await;
        assert_eq!(finished.code, 0, "{args:?}: {finished:#?}");
        finished.stdout
    }
}

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

async fn login(client: &reqwest::Client, url: &str, email: &str) -> String {
    let response = client
        .post(format!("{url}/api/auth/login"))
        .json(&json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login on {url}");
    let body: Value = response.json().await.unwrap();
    body["tokens"]["access_token"].as_str().unwrap().to_owned()
}

fn secret_kids(api: &FakeApi) -> BTreeSet<String> {
    let secret = api.get(SECRET).expect("the key Secret");
    let ring: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            secret["data"]["ring.json"].as_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    ring["keys"]
        .as_object()
        .unwrap()
        .values()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn config_map_kids(api: &FakeApi) -> BTreeSet<String> {
    let map = api.get(CONFIG_MAP).expect("the JWKS ConfigMap");
    let jwks: Value = serde_json::from_str(map["data"]["jwks.json"].as_str().unwrap()).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap().to_owned())
        .collect()
}

fn holder(api: &FakeApi) -> String {
    api.get(LEASE).expect("the Lease")["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn eventually(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tokens verified by the sidecar while the load runs, and every answer.
#[derive(Default)]
struct Load {
    tokens: Vec<String>,
    answers: BTreeMap<u16, usize>,
}

fn start_load(
    replicas: Vec<String>,
    email: String,
    verifier: Arc<TestVerifier>,
    load: Arc<Mutex<Load>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut turn = 0;
        while !*stop.borrow() {
            turn += 1;
            let url = &replicas[turn % replicas.len()];
            let token = login(&client, url, &email).await;
            let status = verifier.verify(&token).await.status().as_u16();
            let mut load = load.lock().unwrap();
            *load.answers.entry(status).or_default() += 1;
            load.tokens.push(token);
        }
    })
}

#[tokio::test]
async fn keys_rotate_under_load_through_the_secret_and_the_config_map_without_a_failed_verification() {
    let db = migrated_database().await;
    let redis = test_redis();
    let api = FakeApi::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    let _server = api.serve(listener);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, FakeApi::kubeconfig(&api_url, NS)).unwrap();
    let platform = Platform {
        env: [
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("DATABASE_URL", db.url.as_str()),
            ("REDIS_URL", redis.url.as_str()),
            ("AUTH_ENVIRONMENT", "production"),
            ("AUTH_MAIL__DISABLED", "true"),
            ("AUTH_BCRYPT_COST", "4"),
            // The load logs one account in again and again.
            ("AUTH_RATE_LIMITS__LOGIN_PER_IP", "100000/1m"),
            ("AUTH_RATE_LIMITS__LOGIN_PER_ACCOUNT", "100000/1m"),
            ("AUTH_LOG_FORMAT", "json"),
            // Their output is read only when they stop: little of it, so the pipe never fills.
            ("AUTH_LOG_LEVEL", "warn"),
            ("AUTH_KUBERNETES__ENABLED", "true"),
            ("AUTH_KUBERNETES__KEYS_SECRET", "signing-keys"),
            ("AUTH_KUBERNETES__JWKS_CONFIG_MAP", "jwks"),
            ("AUTH_KUBERNETES__LEASE", "leader"),
            ("AUTH_KUBERNETES__LEASE_DURATION", "4s"),
            ("AUTH_KUBERNETES__RENEW_DEADLINE", "3s"),
            ("AUTH_KUBERNETES__RETRY_PERIOD", "500ms"),
            // Longer than the verifier's 2 s file check plus the 500 ms "kubelet" sync below.
            ("AUTH_KUBERNETES__PROPAGATION_DELAY", "5s"),
            ("AUTH_KUBERNETES__KEY_ALGORITHM", "ES256"),
        ]
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect(),
    };

    // A first start: one replica creates the Secret; both sign with its one key.
    let (first, first_url) = platform.replica("replica-a").await;
    let (second, second_url) = platform.replica("replica-b").await;
    let mut replicas = BTreeMap::from([
        ("replica-a", (first, first_url.clone())),
        ("replica-b", (second, second_url.clone())),
    ]);
    assert_eq!(secret_kids(&api).len(), 1);
    assert_eq!(config_map_kids(&api), secret_kids(&api));
    let leader = holder(&api);
    assert!(
        replicas.contains_key(leader.as_str()),
        "one of them leads: {leader:?}"
    );
    let mut leading = Vec::new();
    for (identity, (service, _)) in &replicas {
        let metrics = reqwest::get(format!("{}/metrics", service.admin_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics
            .lines()
            .any(|line| line == "auth_server_kubernetes_leader 1")
        {
            leading.push(*identity);
        }
    }
    assert_eq!(leading, [leader.as_str()], "the metric names the one leader");

    // The sidecar reads the ConfigMap as the kubelet mounts it (a directory, never a subPath).
    let jwks_dir = dir.path().join("jwks");
    std::fs::create_dir_all(&jwks_dir).unwrap();
    let _kubelet = mirror_config_map(&api, CONFIG_MAP, &jwks_dir, Duration::from_millis(500));
    eventually(
        "the kubelet projects the ConfigMap",
        Duration::from_secs(5),
        || jwks_dir.join("jwks.json").exists(),
    )
    .await;
    let mut settings = verifier_settings("http://unused", &redis.url);
    settings.jwks_url = None;
    settings.jwks_path = Some(jwks_dir.join("jwks.json"));
    let verifier = Arc::new(start_verifier(settings, true).await);

    let client = reqwest::Client::new();
    let email = format!("rotation-{}@example.com", platform_tests::server::uuid_like());
    let registered = client
        .post(format!("{first_url}/api/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 201);
    let first_kid = kid_of(&login(&client, &second_url, &email).await);

    // Rotation under load: tokens from both replicas before, during and after.
    let load = Arc::new(Mutex::new(Load::default()));
    let (stop_load, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            start_load(
                vec![first_url.clone(), second_url.clone()],
                email.clone(),
                verifier.clone(),
                load.clone(),
                stopped.clone(),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published = platform.cli(&["keys", "rotate"]).await;
    assert!(published.contains("published"), "{published}");
    assert!(
        platform
            .cli(&["keys", "rotate"])
            .await
            .contains("already pending"),
        "no second key"
    );
    assert_eq!(secret_kids(&api).len(), 2);
    eventually(
        "the ConfigMap lists the new key at once",
        Duration::from_secs(5),
        || config_map_kids(&api).len() == 2,
    )
    .await;
    // It does not sign before the propagation delay; then both replicas sign with it.
    assert_eq!(kid_of(&login(&client, &first_url, &email).await), first_kid);
    let mut new_kid = String::new();
    for url in [&first_url, &second_url] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let kid = kid_of(&login(&client, url, &email).await);
            if kid != first_kid {
                new_kid = kid;
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{url} never signed with the new key"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_load.send_replace(true);
    for worker in workers {
        worker.await.unwrap();
    }
    let tokens = {
        let load = load.lock().unwrap();
        assert_eq!(
            load.answers.keys().copied().collect::<Vec<_>>(),
            [200],
            "every verification under load: {:?}",
            load.answers
        );
        let kids: BTreeSet<String> = load.tokens.iter().map(|token| kid_of(token)).collect();
        assert_eq!(
            kids,
            BTreeSet::from([first_kid.clone(), new_kid.clone()]),
            "signed before and after"
        );
        load.tokens.clone()
    };
    for token in &tokens {
        assert_eq!(
            verifier.verify(token).await.status(),
            200,
            "a token from any moment still verifies"
        );
    }

    // The Secret deleted by mistake: the leader writes it back from the keys in use.
    assert!(api.delete(SECRET));
    eventually(
        "the leader re-creates the Secret",
        Duration::from_secs(10),
        || api.get(SECRET).is_some(),
    )
    .await;
    assert_eq!(
        secret_kids(&api),
        BTreeSet::from([first_kid.clone(), new_kid.clone()])
    );
    assert_eq!(verifier.verify(&tokens[0]).await.status(), 200);

    // The leader killed: the other replica takes the Lease after a term and keeps the schedule.
    let leader = holder(&api);
    let (killed, _) = replicas.remove(leader.as_str()).unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &killed.pid().unwrap().to_string()])
        .status()
        .unwrap();
    let (survivor, (_service, survivor_url)) = replicas.into_iter().next().unwrap();
    eventually(
        "the survivor takes over the Lease",
        Duration::from_secs(15),
        || holder(&api) == survivor,
    )
    .await;
    assert!(platform.cli(&["keys", "rotate"]).await.contains("published"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let third_kid = loop {
        let kid = kid_of(&login(&client, &survivor_url, &email).await);
        if kid != new_kid {
            break kid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new leader never activated the key"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(third_kid, first_kid);

    // The first key compromised: its tokens are refused everywhere at once, and it leaves the
    // Secret and the ConfigMap.
    let status = platform.cli(&["keys", "status"]).await;
    assert!(
        status.contains(&first_kid) && status.contains("active"),
        "{status}"
    );
    let revoked = platform.cli(&["keys", "revoke", &first_kid]).await;
    assert!(revoked.contains("published to Redis"), "{revoked}");
    let old_token = tokens.iter().find(|token| kid_of(token) == first_kid).unwrap();
    verifier
        .wait_for_status(old_token, 401, Duration::from_secs(5))
        .await;
    assert!(!secret_kids(&api).contains(&first_kid));
    eventually("the ConfigMap drops the key", Duration::from_secs(5), || {
        !config_map_kids(&api).contains(&first_kid)
    })
    .await;
    let newer = tokens.iter().find(|token| kid_of(token) == new_kid).unwrap();
    assert_eq!(
        verifier.verify(newer).await.status(),
        200,
        "other keys' tokens are untouched"
    );
    let me = client
        .get(format!("{survivor_url}/api/users/profile"))
        .bearer_auth(old_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401, "the server refuses it too");
    assert!(
        !Path::new(&format!("{}/..data/ring.json", jwks_dir.display())).exists(),
        "no private data in the ConfigMap"
    );
}
