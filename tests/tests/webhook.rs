//! The sidecar injection webhook, tested with real AdmissionReview JSON (the shapes the API server
//! sends for a Deployment's pod) and the sidecar template the chart renders: each returned JSON
//! patch is applied with an RFC 6902 implementation and the resulting pod checked. Its TLS is
//! exercised over a real handshake, and its self-managed certificate against a scripted API
//! server.

use std::sync::Arc;
use std::time::Duration;

use auth_core::server::{ConnectionLimits, ListenerMetrics, TlsAcceptor};
use auth_core::shutdown;
use auth_server::cluster::webhook::certificate::{CertificateManager, ServingCertificate, issue};
use auth_server::cluster::webhook::inject::{Injector, Scope, SidecarTemplate};
use auth_server::cluster::webhook::{dns_names, routes};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use platform_tests::scripted_api::ScriptedApi;
use platform_tests::tools::{chart, injector_template, render, yaml_documents};
use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/admission")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The template exactly as the chart renders it into the injector's ConfigMap.
fn chart_template() -> SidecarTemplate {
    static TEMPLATE: std::sync::OnceLock<SidecarTemplate> = std::sync::OnceLock::new();
    TEMPLATE
        .get_or_init(|| {
            let rendered = render(&chart().join("ci/kubernetes-mode-values.yaml"), &[]);
            injector_template(&yaml_documents(&rendered))
        })
        .clone()
}

fn injector(native_sidecars: bool) -> Injector {
    Injector {
        template: chart_template(),
        native_sidecars,
    }
}

fn answer(injector: &Injector, review: &Value, scope: Scope) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let answer = serde_json::to_value(injector.review(&body, scope)).unwrap();
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    answer["response"].clone()
}

/// The pod after the answer's patch, or `None` when there was no patch.
fn patched(review: &Value, response: &Value) -> Option<Value> {
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "the answer names the request"
    );
    assert_eq!(response["allowed"], true, "{response}");
    // A Go []byte: kube writes it as an array of bytes, which the API server's decoder reads as
    // readily as the base64 string Go itself writes.
    let patch: Vec<u8> = match &response["patch"] {
        Value::Null => return None,
        Value::String(base64) => STANDARD.decode(base64).unwrap(),
        bytes => serde_json::from_value(bytes.clone()).unwrap(),
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let operations: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &operations).unwrap();
    // Still a pod the API server can read.
    serde_json::from_value::<Pod>(pod.clone()).unwrap();
    Some(pod)
}

fn env_of(container: &Value, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|variable| variable["name"] == name)
        .map(|variable| variable["value"].as_str().unwrap().to_owned())
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| item["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn with_object(mut review: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut review["request"]["object"]);
    review
}

#[test]
fn a_deployments_pod_gets_a_native_sidecar_in_front_of_its_port_once() {
    let review = fixture("deployment-pod.json");
    let injector = injector(true);
    let pod = patched(&review, &answer(&injector, &review, Scope::Annotated)).expect("a patch");

    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "token-verifier");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        env_of(sidecar, "VERIFIER_UPSTREAM").unwrap(),
        "http://127.0.0.1:8080"
    );
    assert!(
        env_of(sidecar, "VERIFIER_JWKS_URL").unwrap().contains(".svc:"),
        "reachable from other namespaces"
    );
    assert_eq!(sidecar["securityContext"]["runAsNonRoot"], true);
    assert_eq!(sidecar["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["port"], "verifier-admin");
    assert_eq!(names(&sidecar["ports"]), ["verifier", "verifier-admin"]);
    // Its volumes are its own, and its mounts follow them.
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        [
            "kube-api-access-7xk2p",
            "auth-platform-redis",
            "auth-platform-tmp"
        ]
    );
    assert_eq!(
        names(&sidecar["volumeMounts"]),
        ["auth-platform-redis", "auth-platform-tmp"]
    );
    assert_eq!(
        pod["spec"]["volumes"][1]["secret"]["secretName"],
        "auth-platform-redis"
    );
    // The app is untouched; the pod is marked.
    assert_eq!(
        pod["spec"]["containers"],
        review["request"]["object"]["spec"]["containers"]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["auth-platform.io/injected"],
        "true"
    );
    assert_eq!(pod["metadata"]["annotations"]["auth-platform.io/inject"], "true");
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "shop", "pod-template-hash": "6d9f7c8b5", "auth-platform.io/injected": "true"}),
        "labelled for the NetworkPolicy that closes the app's own port"
    );

    // A second admission (a reinvocation, a re-created pod from the same object) adds nothing.
    let again = with_object(review.clone(), |object| *object = pod.clone());
    assert_eq!(
        patched(&again, &answer(&injector, &again, Scope::Annotated)),
        None
    );
}

#[test]
fn annotations_tune_the_sidecar_and_it_goes_before_the_pods_own_init_containers() {
    let review = fixture("pod-with-init-containers.json");
    let pod = patched(&review, &answer(&injector(true), &review, Scope::Annotated)).expect("a patch");
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["token-verifier", "migrate"]
    );
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(
        env_of(sidecar, "VERIFIER_UPSTREAM").unwrap(),
        "http://127.0.0.1:9000"
    );
    assert_eq!(
        env_of(sidecar, "VERIFIER_PUBLIC_PATHS").unwrap(),
        r#"["/healthz","/metrics"]"#
    );
    assert_eq!(
        env_of(sidecar, "VERIFIER_RULES").unwrap(),
        r#"[{path="/admin", roles=["admin"]}]"#
    );
    let env = names(&sidecar["env"]);
    for name in ["VERIFIER_UPSTREAM", "VERIFIER_PUBLIC_PATHS", "VERIFIER_RULES"] {
        assert_eq!(
            env.iter().filter(|variable| *variable == name).count(),
            1,
            "{name} once"
        );
    }
    assert_eq!(sidecar["resources"]["limits"]["memory"], "128Mi");
    assert_eq!(sidecar["resources"]["requests"]["cpu"], "20m");
    assert_eq!(
        sidecar["resources"]["limits"]["cpu"], "1",
        "the chart's value where none is given"
    );
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        [
            "kube-api-access-7xk2p",
            "tmp",
            "auth-platform-redis",
            "auth-platform-tmp"
        ]
    );
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"], "true",
        "other annotations kept"
    );
}

#[test]
fn a_pod_without_annotations_labels_or_volumes_in_an_enabled_namespace_is_injected() {
    let review = with_object(fixture("pod-without-annotations.json"), |object| {
        object["metadata"].as_object_mut().unwrap().remove("labels");
    });
    let injector = injector(true);
    assert_eq!(
        patched(&review, &answer(&injector, &review, Scope::Annotated)),
        None,
        "it did not ask"
    );
    let pod = patched(&review, &answer(&injector, &review, Scope::Namespace)).expect("its namespace asked");
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({"auth-platform.io/injected": "true"})
    );
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"auth-platform.io/injected": "true"})
    );
    assert_eq!(
        names(&pod["spec"]["volumes"]),
        ["auth-platform-redis", "auth-platform-tmp"]
    );
    assert_eq!(names(&pod["spec"]["initContainers"]), ["token-verifier"]);

    // Elsewhere, a pod labelled (not annotated) asks as well: the chart's default selector sends
    // the webhook only such pods.
    let labelled = with_object(review, |object| {
        object["metadata"]["labels"]["auth-platform.io/inject"] = json!("true");
    });
    let pod = patched(&labelled, &answer(&injector, &labelled, Scope::Annotated)).expect("it asked by label");
    assert_eq!(names(&pod["spec"]["initContainers"]), ["token-verifier"]);
}

#[test]
fn without_native_sidecars_the_verifier_is_a_plain_container_and_a_pod_may_choose() {
    let review = fixture("deployment-pod.json");
    let pod = patched(&review, &answer(&injector(false), &review, Scope::Annotated)).expect("a patch");
    assert_eq!(names(&pod["spec"]["containers"]), ["shop", "token-verifier"]);
    assert!(pod["spec"]["initContainers"].is_null());
    assert!(pod["spec"]["containers"][1]["restartPolicy"].is_null());

    let native = with_object(review, |object| {
        object["metadata"]["annotations"]["auth-platform.io/native-sidecar"] = json!("true");
    });
    let pod = patched(&native, &answer(&injector(false), &native, Scope::Annotated)).expect("a patch");
    assert_eq!(names(&pod["spec"]["initContainers"]), ["token-verifier"]);
}

#[test]
fn what_did_not_ask_or_must_never_be_injected_is_left_alone() {
    let injector = injector(true);
    let review = fixture("deployment-pod.json");
    let opted_out = with_object(fixture("pod-without-annotations.json"), |object| {
        object["metadata"]["annotations"] = json!({"auth-platform.io/inject": "false"});
    });
    assert_eq!(
        patched(&opted_out, &answer(&injector, &opted_out, Scope::Namespace)),
        None
    );
    let own = with_object(review.clone(), |object| {
        object["metadata"]["labels"]["app.kubernetes.io/part-of"] = json!("auth-platform");
    });
    assert_eq!(patched(&own, &answer(&injector, &own, Scope::Annotated)), None);
    let mut system = review.clone();
    system["request"]["namespace"] = json!("kube-system");
    assert_eq!(
        patched(&system, &answer(&injector, &system, Scope::Namespace)),
        None
    );
    let mut update = review.clone();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["oldObject"] = update["request"]["object"].clone();
    assert_eq!(
        patched(&update, &answer(&injector, &update, Scope::Annotated)),
        None
    );
    let mut deployment = review.clone();
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    deployment["request"]["object"] =
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"}, "spec": {}});
    assert_eq!(
        patched(&deployment, &answer(&injector, &deployment, Scope::Annotated)),
        None
    );
    let mut unreadable = review;
    unreadable["request"]["object"]["spec"]["containers"] = json!("not a list");
    let response = answer(&injector, &unreadable, Scope::Annotated);
    assert_eq!(
        patched(&unreadable, &response),
        None,
        "a pod it cannot read is the API server's to judge"
    );
    assert!(response["warnings"][0].as_str().unwrap().contains("skipped"));
}

#[test]
fn a_pod_that_asked_but_cannot_be_injected_as_asked_is_refused_with_the_reason() {
    let injector = injector(true);
    let cases = [
        (
            "auth-platform.io/upstream-port",
            json!("http"),
            "must be a port number",
        ),
        ("auth-platform.io/upstream-port", json!("8181"), "sidecar's own"),
        (
            "auth-platform.io/public-paths",
            json!("healthz"),
            "must start with /",
        ),
        // What the sidecar itself would refuse at start, in its own words.
        (
            "auth-platform.io/public-paths",
            json!("/public/../admin"),
            "dot or trailing-dot segment",
        ),
        (
            "auth-platform.io/rules",
            json!("[{path=\"/admin\", roles=[]}]"),
            "at least one role",
        ),
        (
            "auth-platform.io/rules",
            json!("[{path=\"/admin\"}]"),
            "missing field `roles`",
        ),
        (
            "auth-platform.io/rules",
            json!("[{path=\"/%61dmin\", roles=[\"admin\"]}]"),
            "should be written",
        ),
        ("auth-platform.io/memory-limit", json!("lots"), "not a quantity"),
        (
            "auth-platform.io/native-sidecar",
            json!("yes"),
            "\"true\" or \"false\"",
        ),
    ];
    for (annotation, value, reason) in cases {
        let review = with_object(fixture("deployment-pod.json"), |object| {
            object["metadata"]["annotations"][annotation] = value.clone();
        });
        let response = answer(&injector, &review, Scope::Annotated);
        assert_eq!(response["allowed"], false, "{annotation}={value}");
        assert_eq!(response["uid"], review["request"]["uid"]);
        assert!(response["patch"].is_null());
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.contains(reason) && message.contains(annotation),
            "{message}"
        );
    }
    let portless = with_object(fixture("deployment-pod.json"), |object| {
        object["spec"]["containers"][0]["ports"] = json!([]);
    });
    let response = answer(&injector, &portless, Scope::Annotated);
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream-port")
    );
}

#[test]
fn an_unparsable_review_is_answered_not_failed() {
    let injector = injector(true);
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let answer = serde_json::to_value(injector.review(body, Scope::Annotated)).unwrap();
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(
            answer["response"]["status"]["reason"], "InvalidRequest",
            "{answer}"
        );
    }
}

/// POSTs `body` to the webhook over TLS, trusting only `ca`, by the Service's DNS name.
async fn post_tls(
    address: std::net::SocketAddr,
    ca: &[u8],
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca) {
        roots.add(certificate?)?;
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("auth-platform-webhook.auth-platform.svc")?;
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::post(path)
        .header("host", "auth-platform-webhook.auth-platform.svc")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await?
        .to_bytes();
    Ok((status, body.to_vec()))
}

#[tokio::test]
async fn the_webhook_answers_over_tls_and_serves_a_renewed_certificate_without_a_restart() {
    let names = dns_names("auth-platform-webhook", "auth-platform");
    let first = issue(&names, None, auth_core::revocation::unix_now())
        .unwrap()
        .data;
    let serving = Arc::new(ServingCertificate::default());
    serving.install(&first["tls.crt"].0, &first["tls.key"].0).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(serving.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let registry = prometheus::Registry::new();
    let [metrics] = ListenerMetrics::register(&registry, ["webhook"]).unwrap();
    let reviews =
        prometheus::IntCounterVec::new(prometheus::Opts::new("reviews", "reviews"), &["outcome"]).unwrap();
    let (stop, shutdown) = shutdown::channel();
    let server = tokio::spawn(auth_core::server::serve_tls(
        listener,
        TlsAcceptor::from(Arc::new(config)),
        routes(injector(true), reviews.clone()),
        ConnectionLimits::default(),
        metrics,
        shutdown.wait(),
        Some(Duration::from_secs(1)),
    ));

    let review = fixture("deployment-pod.json");
    let ca = first["ca.crt"].0.clone();
    let (status, body) = post_tls(
        address,
        &ca,
        "/inject/annotated",
        serde_json::to_vec(&review).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert!(patched(&review, &answer["response"]).is_some());
    let (status, body) = post_tls(address, &ca, "/inject/namespace", b"garbage".to_vec())
        .await
        .unwrap();
    assert_eq!(status, 200, "answered, never a 500");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["response"]["allowed"],
        false
    );

    // A renewal signed by the same CA is served to the next connection; a foreign CA is refused.
    let ca_pair = (
        std::str::from_utf8(&first["ca.key"].0).unwrap(),
        std::str::from_utf8(&first["ca.crt"].0).unwrap(),
    );
    let renewed = issue(&names, Some(ca_pair), auth_core::revocation::unix_now())
        .unwrap()
        .data;
    assert_eq!(renewed["ca.crt"].0, ca, "the CA is kept");
    assert_ne!(renewed["tls.crt"].0, first["tls.crt"].0);
    serving
        .install(&renewed["tls.crt"].0, &renewed["tls.key"].0)
        .unwrap();
    let (status, _) = post_tls(
        address,
        &ca,
        "/inject/annotated",
        serde_json::to_vec(&review).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let stranger = issue(&names, None, auth_core::revocation::unix_now())
        .unwrap()
        .data;
    let refused = post_tls(address, &stranger["ca.crt"].0, "/inject/annotated", Vec::new()).await;
    assert!(
        refused.is_err(),
        "a client trusting another CA must fail the handshake"
    );

    let counted = |outcome: &str| reviews.with_label_values(&[outcome]).get();
    assert_eq!(
        (counted("injected"), counted("invalid")),
        (2, 1),
        "every answer is counted by outcome"
    );

    stop.trigger();
    server.await.unwrap().unwrap();
}

fn configuration(ca_bundle: Option<&str>) -> Value {
    let webhook = |name: &str| {
        let mut client_config = json!({"service": {"name": "auth-platform-webhook", "namespace": "auth-platform", "path": "/inject/annotated", "port": 443}});
        if let Some(bundle) = ca_bundle {
            client_config["caBundle"] = json!(bundle);
        }
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": client_config})
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "auth-injector", "resourceVersion": "10"},
        "webhooks": [webhook("namespace.inject.auth-platform.io"), webhook("annotated.inject.auth-platform.io")],
    })
}

const TLS_SECRET: &str = "/api/v1/namespaces/auth-platform/secrets/webhook-tls";
const MWC: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/auth-injector";

#[tokio::test]
async fn the_leader_issues_the_certificate_once_and_writes_the_ca_bundle_only_when_it_differs() {
    let (client, mut api) = ScriptedApi::new("auth-platform");
    let manager = Arc::new(CertificateManager {
        secrets: kube::Api::namespaced(client.clone(), "auth-platform"),
        secret: "webhook-tls".to_owned(),
        dns_names: dns_names("auth-platform-webhook", "auth-platform"),
        configurations: kube::Api::all(client),
        configuration: "auth-injector".to_owned(),
    });
    let reconcile = |now: i64| {
        let manager = manager.clone();
        tokio::spawn(async move { manager.reconcile(now).await.map_err(|error| error.to_string()) })
    };
    let now = auth_core::revocation::unix_now();

    // First start: a CA and a certificate, then the bundle in both webhooks.
    let first = reconcile(now);
    api.expect("GET", TLS_SECRET).await.fail(404, "NotFound");
    let create = api
        .expect("POST", "/api/v1/namespaces/auth-platform/secrets")
        .await;
    let ca = create.body["data"]["ca.crt"].as_str().unwrap().to_owned();
    assert!(create.body["data"]["tls.crt"].is_string() && create.body["data"]["tls.key"].is_string());
    let secret = create.echo(201, "1");
    api.expect("GET", MWC).await.answer(200, &configuration(None));
    let replace = api.expect("PUT", MWC).await;
    for webhook in replace.body["webhooks"].as_array().unwrap() {
        assert_eq!(webhook["clientConfig"]["caBundle"], ca.as_str());
    }
    assert_eq!(replace.body["metadata"]["resourceVersion"], "10");
    replace.echo(200, "11");
    first.await.unwrap().unwrap();

    // Nothing to do: no write at all (an Argo CD sync sees no churn from us).
    let steady = reconcile(now + 60);
    api.expect("GET", TLS_SECRET).await.answer(200, &secret);
    api.expect("GET", MWC)
        .await
        .answer(200, &configuration(Some(&ca)));
    steady.await.unwrap().unwrap();
    api.expect_silence(Duration::from_millis(200)).await;

    // Near its end the certificate is renewed with the same CA: the bundle stays as it is.
    let renewal = reconcile(now + 340 * 86_400);
    api.expect("GET", TLS_SECRET).await.answer(200, &secret);
    let renewed = api.expect("PUT", TLS_SECRET).await;
    assert_eq!(renewed.body["data"]["ca.crt"], ca.as_str());
    assert_ne!(renewed.body["data"]["tls.crt"], secret["data"]["tls.crt"]);
    renewed.echo(200, "2");
    api.expect("GET", MWC)
        .await
        .answer(200, &configuration(Some(&ca)));
    renewal.await.unwrap().unwrap();
    api.expect_silence(Duration::from_millis(200)).await;
}
