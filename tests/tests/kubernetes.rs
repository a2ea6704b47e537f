//! The Helm chart and the kustomize manifests, checked with the real tools: `helm lint --strict`,
//! every rendering validated against the Kubernetes schemas in strict mode and by checkov, the
//! restricted posture on every container, key Secrets that survive an upgrade, alert rules and a
//! dashboard that only name metrics the programs export.

use std::collections::BTreeSet;
use std::path::PathBuf;

use auth_server::cluster::webhook::inject::INJECTED;
use platform_tests::tools::{
    chart, helm, injector_template, kubectl, output_of, promtool, render, repository, venv, yaml_documents,
};
use serde_json::{Value, json};

/// Every `ci/*-values.yaml` scenario of the chart.
fn scenarios() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

fn kustomizations() -> Vec<PathBuf> {
    [
        "k8s/base",
        "k8s/overlays/dev",
        "k8s/overlays/production",
        "k8s/examples/app",
    ]
    .iter()
    .map(|dir| repository().join(dir))
    .collect()
}

/// Every rendering the suite checks: each chart scenario and each kustomization, by name.
fn renderings() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = scenarios()
        .iter()
        .map(|values| (values.display().to_string(), render(values, &[])))
        .collect();
    for dir in kustomizations() {
        all.push((
            dir.display().to_string(),
            output_of(kubectl().arg("kustomize").arg(&dir)),
        ));
    }
    all
}

#[test]
fn the_chart_lints_strictly_in_every_scenario() {
    for values in scenarios() {
        let output = output_of(
            helm()
                .args(["lint", "--strict"])
                .arg(chart())
                .arg("-f")
                .arg(&values),
        );
        assert!(
            output.contains("0 chart(s) failed"),
            "{}: {output}",
            values.display()
        );
    }
    // A value outside the schema is refused.
    assert!(helm_refuses(&["lint", "--strict"], "migrations.mode=sometimes"));
}

/// Whether `helm <command> <chart> --set <setting>` fails.
fn helm_refuses(command: &[&str], setting: &str) -> bool {
    let output = helm()
        .args(command)
        .arg(chart())
        .args(["--set", setting])
        .output()
        .unwrap();
    !output.status.success()
}

#[test]
fn every_rendering_is_valid_kubernetes_in_strict_mode_and_passes_checkov() {
    let dir = tempfile::tempdir().unwrap();
    for (name, manifests) in renderings() {
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &manifests).unwrap();
        for version in ["1.29.0", "1.35.0"] {
            let validated = venv("kubernetes-validate")
                .args(["--strict", "--quiet", "-k", version])
                .arg(&file)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&validated.stdout).into_owned()
                + &String::from_utf8_lossy(&validated.stderr);
            let problems: Vec<&str> = report
                .lines()
                .filter(|line| !line.is_empty() && !line.contains("Couldn't find schema for kind"))
                .collect();
            assert!(
                validated.status.success() && problems.is_empty(),
                "{name} ({version}): {report}"
            );
            // The only kinds without a schema are the Prometheus Operator's.
            for line in report
                .lines()
                .filter(|line| line.contains("Couldn't find schema"))
            {
                assert!(line.contains("monitoring.coreos.com"), "{name}: {line}");
            }
        }
        let checked = venv("checkov")
            .args(["--framework", "kubernetes", "--quiet", "--output", "json", "-f"])
            .arg(&file)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&checked.stdout)
            .unwrap_or_else(|_| panic!("{name}: {}", String::from_utf8_lossy(&checked.stdout)));
        let summary = &report["summary"];
        assert_eq!(
            summary["failed"], 0,
            "{name}: {}",
            report["results"]["failed_checks"]
        );
        assert!(
            summary["passed"].as_u64().unwrap() > 50,
            "{name}: checkov checked little: {summary}"
        );
    }
}

fn pod_specs(documents: &[Value]) -> Vec<(String, &Value)> {
    documents
        .iter()
        .filter_map(|doc| {
            let spec = match doc["kind"].as_str()? {
                "Deployment" | "StatefulSet" | "Job" => &doc["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((doc["metadata"]["name"].as_str()?.to_owned(), spec))
        })
        .collect()
}

#[test]
fn every_container_runs_with_the_restricted_posture_and_no_secret_in_plain_sight() {
    for (name, manifests) in renderings() {
        let documents = yaml_documents(&manifests);
        for (workload, spec) in pod_specs(&documents) {
            let pod = &spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{name} {workload}");
            assert_eq!(
                pod["seccompProfile"]["type"], "RuntimeDefault",
                "{name} {workload}"
            );
            // Only a server keeping its keys in Kubernetes talks to the API.
            let kubernetes_mode = spec["containers"][0]["env"].as_array().is_some_and(|env| {
                env.iter()
                    .any(|var| var["name"] == "AUTH_KUBERNETES__ENABLED" && var["value"] == "true")
            });
            assert!(
                spec["automountServiceAccountToken"] == Value::Bool(kubernetes_mode),
                "{name} {workload}: an API token exactly where the API is used"
            );
            let containers = spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten());
            for container in containers {
                let what = format!("{name} {workload} {}", container["name"]);
                let context = &container["securityContext"];
                assert_eq!(context["readOnlyRootFilesystem"], true, "{what}");
                assert_eq!(context["allowPrivilegeEscalation"], false, "{what}");
                assert_eq!(context["runAsNonRoot"], true, "{what}");
                assert!(context["runAsUser"].as_u64().unwrap() > 0, "{what}");
                assert_eq!(
                    context["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what}"
                );
                assert!(container["resources"]["limits"]["memory"].is_string(), "{what}");
                for value in container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|env| env["value"].as_str())
                    .chain(
                        container["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    )
                {
                    assert!(
                        !has_credentials(value),
                        "{what}: a credential-bearing URL in plain sight: {value}"
                    );
                }
            }
        }
        for document in &documents {
            if document["kind"] == "ConfigMap" {
                assert!(
                    !has_credentials(&document["data"].to_string()),
                    "{name}: credentials in a ConfigMap"
                );
            }
        }
    }
}

/// Whether `text` holds a URL with a password (`scheme://user:password@host`).
fn has_credentials(text: &str) -> bool {
    text.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '"', ' ', '\n']).next().unwrap_or("");
        authority
            .split_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    })
}

fn generated_key_secrets(manifests: &str) -> Vec<Value> {
    yaml_documents(manifests)
        .into_iter()
        .filter(|doc| {
            doc["kind"] == "Secret"
                && doc["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .ends_with("-signing-keys")
        })
        .collect()
}

#[test]
fn the_generated_signing_key_is_rendered_at_install_only_and_kept() {
    let defaults = chart().join("ci/default-values.yaml");
    let installed = generated_key_secrets(&render(&defaults, &[]));
    assert_eq!(installed.len(), 1);
    let secret = &installed[0];
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let keys: Vec<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert!(keys.len() == 1 && keys[0].ends_with(".pem"), "{keys:?}");
    // An upgrade with changed values renders no key: the installed Secret stays as it is (Helm
    // does not delete a resource kept by its policy) and the pods still mount it.
    let upgraded = render(
        &defaults,
        &[
            "--is-upgrade",
            "--set",
            "server.replicas=5",
            "--set",
            "server.bcryptCost=13",
        ],
    );
    assert!(generated_key_secrets(&upgraded).is_empty());
    assert!(upgraded.contains(&format!(
        "secretName: {}",
        secret["metadata"]["name"].as_str().unwrap()
    )));
    // With a Secret of the user's, nothing is generated at all.
    let existing = render(&chart().join("ci/existing-secrets-values.yaml"), &[]);
    assert!(generated_key_secrets(&existing).is_empty());
    assert!(existing.contains("secretName: auth-platform-signing-keys"));
}

#[test]
fn the_migration_hook_runs_after_the_secrets_it_reads_exist() {
    let manifests = render(&chart().join("ci/url-values.yaml"), &[]);
    let documents = yaml_documents(&manifests);
    let weight = |kind: &str, suffix: &str| -> i64 {
        let document = documents
            .iter()
            .find(|doc| doc["kind"] == kind && doc["metadata"]["name"].as_str().unwrap().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {kind} *{suffix}"));
        let annotations = &document["metadata"]["annotations"];
        assert_eq!(
            annotations["helm.sh/hook"], "pre-install,pre-upgrade",
            "{kind} {suffix}"
        );
        annotations["helm.sh/hook-weight"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let job = weight("Job", "-migrate");
    assert!(weight("Secret", "-database") < job);
    assert!(weight("Secret", "-redis") < job);
}

#[test]
fn the_kustomize_manifests_are_the_chart_rendered() {
    let dir = tempfile::tempdir().unwrap();
    let helm_path = helm().get_program().to_owned();
    output_of(
        std::process::Command::new(repository().join("scripts/render-k8s"))
            .env("HELM", helm_path)
            .arg(dir.path()),
    );
    for file in [
        "base/auth-platform.yaml",
        "overlays/dev/databases.yaml",
        "overlays/production/autoscaling.yaml",
        "examples/app/app.yaml",
    ] {
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let committed = std::fs::read_to_string(repository().join("k8s").join(file)).unwrap();
        assert!(fresh == committed, "k8s/{file} is stale: run scripts/render-k8s");
    }
}

#[test]
fn the_chart_readme_describes_every_value() {
    let values = yaml_documents(&std::fs::read_to_string(chart().join("values.yaml")).unwrap());
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
        match value.as_object() {
            Some(map) if !map.is_empty() && !path.ends_with("resources") => {
                for (key, child) in map {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    leaves(child, &child_path, out);
                }
            }
            _ => out.push(path.to_owned()),
        }
    }
    let mut paths = Vec::new();
    leaves(&values[0], "", &mut paths);
    for path in paths.iter().filter(|path| {
        ![
            "labels",
            "annotations",
            "podAnnotations",
            "podLabels",
            "nodeSelector",
            "affinity",
            "monitoringNamespaceSelector",
        ]
        .iter()
        .any(|map| path.contains(&format!(".{map}.")))
    }) {
        assert!(
            readme.contains(&format!("`{path}`")),
            "{path} is not in the chart's README"
        );
    }
}

/// Metric names in PromQL: identifiers followed by `{`, `[` or `)` that look like ours.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut in_string = false;
    for c in promql.chars().chain([' ']) {
        if c == '"' {
            in_string = !in_string;
            word.clear();
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if !in_string
            && ["auth_server_", "verifier_", "migrator_", "kube_"]
                .iter()
                .any(|prefix| word.starts_with(prefix))
        {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(&word);
            names.insert(base.to_owned());
        }
        word.clear();
    }
    names
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_metrics_the_programs_export() {
    let alerts = chart().join("files/alerts.yaml");
    let checked = output_of(promtool().args(["check", "rules"]).arg(&alerts));
    assert!(checked.contains("SUCCESS: 8 rules found"), "{checked}");
    let tested = output_of(
        promtool()
            .args(["test", "rules"])
            .arg(repository().join("tests/promtool/alerts-test.yaml")),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    let mut used = BTreeSet::new();
    for document in yaml_documents(&std::fs::read_to_string(&alerts).unwrap()) {
        for rule in document["groups"][0]["rules"].as_array().unwrap() {
            used.extend(metric_names(rule["expr"].as_str().unwrap()));
        }
    }
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("files/dashboard.json")).unwrap())
            .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            used.extend(metric_names(target["expr"].as_str().unwrap()));
        }
    }
    assert!(used.len() > 20, "{used:?}");

    // Real scrapes: a server and a sidecar that served a little traffic.
    let server = platform_tests::server::spawn_server().await;
    let user = server.new_user().await;
    let verifier = platform_tests::verifier::start_verifier(
        platform_tests::verifier::verifier_settings(
            &format!("{}/.well-known/jwks.json", server.url),
            &server.redis_url,
        ),
        true,
    )
    .await;
    assert_eq!(verifier.verify(&user.access).await.status(), 200);
    assert_eq!(verifier.verify("garbage").await.status(), 401);
    let exported: String = server.metrics().await + &verifier.metrics().await;
    let exported: BTreeSet<&str> = exported
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for name in &used {
        // The migration alert reads kube-state-metrics: the migrator's own metrics live only as
        // long as its Job.
        if name.starts_with("kube_") {
            assert_eq!(name, "kube_job_status_failed");
            continue;
        }
        assert!(exported.contains(name.as_str()), "{name} is not exported");
    }
}

fn env_value(container: &Value, name: &str) -> String {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|var| var["name"] == name))
        .and_then(|var| var["value"].as_str())
        .unwrap_or_else(|| panic!("no {name}"))
        .to_owned()
}

/// The server's Deployment in a rendering.
fn server_deployment(documents: &[Value]) -> &Value {
    documents
        .iter()
        .find(|doc| doc["kind"] == "Deployment" && doc["metadata"]["name"] == "auth-auth-platform-server")
        .expect("the server's Deployment")
}

#[test]
fn kubernetes_mode_grants_exactly_the_verbs_on_exactly_the_objects_the_server_is_configured_with() {
    let documents = yaml_documents(&render(&chart().join("ci/kubernetes-mode-values.yaml"), &[]));
    let server = server_deployment(&documents);
    let container = &server["spec"]["template"]["spec"]["containers"][0];
    let name = |variable: &str| env_value(container, variable);
    let rules_of = |kind: &str| -> Vec<Value> {
        let found: Vec<&Value> = documents.iter().filter(|doc| doc["kind"] == kind).collect();
        assert_eq!(found.len(), 1, "one {kind}");
        found[0]["rules"].as_array().unwrap().clone()
    };
    let grants = |rules: &[Value]| -> BTreeSet<String> {
        let mut grants = BTreeSet::new();
        for rule in rules {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let names: Vec<&str> = rule["resourceNames"]
                        .as_array()
                        .map(|names| names.iter().map(|name| name.as_str().unwrap()).collect())
                        .unwrap_or_else(|| vec!["*"]);
                    for object in names {
                        grants.insert(format!(
                            "{} {} {object}",
                            verb.as_str().unwrap(),
                            resource.as_str().unwrap()
                        ));
                    }
                }
            }
        }
        grants
    };
    let keys = name("AUTH_KUBERNETES__KEYS_SECRET");
    let tls = name("AUTH_KUBERNETES__WEBHOOK__TLS_SECRET");
    let jwks = name("AUTH_KUBERNETES__JWKS_CONFIG_MAP");
    let lease = name("AUTH_KUBERNETES__LEASE");
    let mut expected: BTreeSet<String> = ["get", "list", "watch", "update"]
        .iter()
        .flat_map(|verb| [format!("{verb} secrets {keys}"), format!("{verb} secrets {tls}")])
        .collect();
    expected.extend([
        format!("get configmaps {jwks}"),
        format!("update configmaps {jwks}"),
        format!("get leases {lease}"),
        format!("update leases {lease}"),
        // A create cannot name its object; it is granted in the release's namespace only.
        "create secrets *".to_owned(),
        "create configmaps *".to_owned(),
        "create leases *".to_owned(),
    ]);
    assert_eq!(grants(&rules_of("Role")), expected);
    let configuration = name("AUTH_KUBERNETES__WEBHOOK__CONFIGURATION");
    assert_eq!(
        grants(&rules_of("ClusterRole")),
        BTreeSet::from([
            format!("get mutatingwebhookconfigurations {configuration}"),
            format!("update mutatingwebhookconfigurations {configuration}"),
        ]),
        "nothing cluster-wide beyond the webhook configuration"
    );
    let webhook = documents
        .iter()
        .find(|doc| doc["kind"] == "MutatingWebhookConfiguration")
        .unwrap();
    assert_eq!(webhook["metadata"]["name"], configuration.as_str());
    for entry in webhook["webhooks"].as_array().unwrap() {
        assert!(
            entry["clientConfig"]["caBundle"].is_null(),
            "never rendered: the server writes it"
        );
        assert_eq!(
            entry["clientConfig"]["service"]["name"],
            name("AUTH_KUBERNETES__WEBHOOK__SERVICE")
        );
        let excluded = entry["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|expression| {
                expression["key"] == "kubernetes.io/metadata.name" && expression["values"][0] == "kube-system"
            });
        assert!(excluded, "kube-system is never injected");
        assert_eq!(
            entry["objectSelector"]["matchExpressions"][0]["key"],
            "app.kubernetes.io/part-of"
        );
        // Outside enabled namespaces only pods labelled to ask are sent, so an outage of the
        // webhook under `failurePolicy: Fail` blocks nothing else.
        if entry["name"] == "annotated.inject.auth-platform.io" {
            let asked = &entry["objectSelector"]["matchExpressions"][1];
            assert_eq!(
                (&asked["key"], &asked["values"][0]),
                (&Value::from("auth-platform.io/inject"), &Value::from("true"))
            );
        }
    }
    // Directory mode (the default) grants nothing.
    let default = render(&chart().join("ci/default-values.yaml"), &[]);
    assert!(!default.contains("kind: Role"), "no RBAC without Kubernetes mode");
}

/// Every container that reads a URL Secret also gets what the production data tier adds to it:
/// the PostgreSQL CA mounted where the URL names it, the Sentinel addresses, and the Redis CA and
/// client certificate as files it is told about, mounted from the TLS Secret (the injected sidecar
/// included, whose volumes come with its template).
#[test]
fn the_production_data_tier_reaches_every_container_that_talks_to_postgres_or_redis() {
    let documents = yaml_documents(&render(&chart().join("ci/production-data-tier-values.yaml"), &[]));
    let has_env = |container: &Value, name: &str| {
        container["env"]
            .as_array()
            .is_some_and(|env| env.iter().any(|var| var["name"] == name))
    };
    let mounts = |container: &Value, volume: &str, path: &str| {
        container["volumeMounts"].as_array().is_some_and(|all| {
            all.iter()
                .any(|mount| mount["name"] == volume && mount["mountPath"] == path)
        })
    };
    let check = |container: &Value, volumes: &[Value], name: &str| {
        let secret_of = |volume: &str| {
            volumes
                .iter()
                .find(|candidate| candidate["name"] == volume)
                .map(|found| found["secret"]["secretName"].clone())
        };
        if has_env(container, "DATABASE_URL_FILE") {
            assert!(
                mounts(
                    container,
                    "database-tls",
                    "/var/run/secrets/auth-platform/database-tls"
                ),
                "{name}: the PostgreSQL CA"
            );
            assert_eq!(
                secret_of("database-tls"),
                Some(json!("auth-platform-database-tls"))
            );
        }
        if has_env(container, "REDIS_URL_FILE") {
            let prefix = if has_env(container, "AUTH_REDIS_NAMESPACE") {
                "AUTH_"
            } else {
                "VERIFIER_"
            };
            assert_eq!(
                env_value(container, &format!("{prefix}REDIS_SENTINELS")),
                "redis-sentinel-0.redis:26379,redis-sentinel-1.redis:26379,redis-sentinel-2.redis:26379",
                "{name}"
            );
            for (variable, file) in [
                ("CA_PATH", "ca.crt"),
                ("CLIENT_CERT_PATH", "tls.crt"),
                ("CLIENT_KEY_PATH", "tls.key"),
            ] {
                assert_eq!(
                    env_value(container, &format!("{prefix}REDIS_TLS__{variable}")),
                    format!("/var/run/secrets/auth-platform/redis-tls/{file}"),
                    "{name}"
                );
            }
            assert!(
                mounts(container, "redis-tls", "/var/run/secrets/auth-platform/redis-tls"),
                "{name}"
            );
            assert_eq!(
                secret_of("redis-tls"),
                Some(json!("auth-platform-redis-tls")),
                "{name}"
            );
            if prefix == "AUTH_" {
                assert_eq!(env_value(container, "AUTH_REDIS_WAIT_REPLICAS"), "1");
            }
        }
    };
    let mut checked = 0;
    for (name, spec) in pod_specs(&documents) {
        let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
        for container in ["initContainers", "containers"]
            .iter()
            .filter_map(|list| spec[list].as_array())
            .flatten()
        {
            check(container, &volumes, &name);
            checked += 1;
        }
    }
    let template: Value = injector_template(&documents);
    check(
        &template["container"],
        template["volumes"].as_array().unwrap(),
        "the injected sidecar",
    );
    assert!(
        checked >= 3,
        "the server, the migrator and the example app's sidecar"
    );
}

#[test]
fn injected_pods_of_the_listed_namespaces_admit_only_the_sidecars_ports() {
    let documents = yaml_documents(&render(&chart().join("ci/kubernetes-mode-values.yaml"), &[]));
    let template: Value = injector_template(&documents);
    let sidecar_ports: BTreeSet<i64> = template["container"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["containerPort"].as_i64().unwrap())
        .collect();
    let policies: Vec<&Value> = documents
        .iter()
        .filter(|doc| {
            doc["kind"] == "NetworkPolicy" && doc["spec"]["podSelector"]["matchLabels"][INJECTED] == "true"
        })
        .collect();
    let namespaces: Vec<&str> = policies
        .iter()
        .map(|policy| policy["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["shop", "billing"], "one per listed namespace");
    for policy in policies {
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
        let admitted: BTreeSet<i64> = policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| rule["ports"].as_array().unwrap())
            .map(|port| port["port"].as_i64().unwrap())
            .collect();
        assert_eq!(admitted, sidecar_ports, "the app's own port is closed");
    }
    let without = yaml_documents(&render(&chart().join("ci/default-values.yaml"), &[]));
    assert!(
        !without
            .iter()
            .any(|doc| doc["kind"] == "NetworkPolicy" && doc["metadata"]["namespace"] == "shop")
    );
}

#[test]
fn the_first_administrator_is_configured_from_a_mounted_secret() {
    let documents = yaml_documents(&render(&chart().join("ci/existing-secrets-values.yaml"), &[]));
    let server = server_deployment(&documents);
    let spec = &server["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    assert_eq!(
        env_value(container, "AUTH_ADMIN_BOOTSTRAP__EMAIL"),
        "root@example.com"
    );
    let file = env_value(container, "AUTH_ADMIN_BOOTSTRAP__PASSWORD_FILE");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| file.starts_with(mount["mountPath"].as_str().unwrap()))
        .expect("the password file is mounted");
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "auth-platform-admin");
    assert_eq!(
        volume["secret"]["items"],
        json!([{"key": "password", "path": file.rsplit('/').next().unwrap()}])
    );

    assert!(
        helm_refuses(&["template", "auth"], "adminBootstrap.email=root@example.com"),
        "an address without its password Secret"
    );
    let without = yaml_documents(&render(&chart().join("ci/default-values.yaml"), &[]));
    assert!(
        !serde_json::to_string(&without)
            .unwrap()
            .contains("AUTH_ADMIN_BOOTSTRAP")
    );
}
