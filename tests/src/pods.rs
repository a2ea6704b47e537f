//! Rendered Kubernetes workloads run as podman containers, applying their pod specs rather than
//! approximating them: command and args, env (literal, `secretKeyRef`, `configMapKeyRef`,
//! `fieldRef`), Secrets and ConfigMaps mounted as files in the kubelet's layout (`..data`
//! symlinks, `items`, `defaultMode`, `fsGroup` ownership), emptyDirs, the security context (user,
//! group, supplementary `fsGroup`, read-only root filesystem without podman's extra tmpfs mounts,
//! dropped capabilities, no new privileges), resource limits, init containers run to completion
//! one after another before the main containers — except native sidecars (`restartPolicy:
//! Always`), which start and pass their startup probe before the next one and keep running — and
//! probes polled exactly as written.
//!
//! What a cluster does that this cannot: pod networking. Every pod shares the host's network (the
//! test's PostgreSQL and Redis listen on loopback), so each Service name resolves to 127.0.0.1 and
//! must expose the same port number its target container listens on (checked, not assumed); a
//! Deployment runs one replica. Anything else the translator does not understand fails the test.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;

use crate::containers::Podman;
use crate::tools::output_of;

/// A pod started by [`Cluster::start`].
pub struct Pod {
    /// Its name.
    pub name: String,
    spec: Value,
}

/// The objects of one rendering, and the containers started from them.
pub struct Cluster<'a> {
    podman: &'a Podman,
    namespace: String,
    secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    services: Vec<String>,
    containers: Vec<String>,
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

fn unsupported(what: &str) -> ! {
    panic!("the pod translator does not support {what}: teach it, do not approximate it")
}

impl<'a> Cluster<'a> {
    /// The Secrets, ConfigMaps and Services of `documents`, checking that every Service can be
    /// emulated on the host network.
    pub fn new(podman: &'a Podman, documents: &[Value], namespace: &str) -> Self {
        let mut cluster = Self {
            podman,
            namespace: namespace.to_owned(),
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
            services: Vec::new(),
            containers: Vec::new(),
        };
        for document in documents {
            let name = text(&document["metadata"]["name"]).to_owned();
            match text(&document["kind"]) {
                "Secret" => {
                    let mut data: BTreeMap<String, Vec<u8>> = document["data"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(key, value)| {
                            let bytes = base64::engine::general_purpose::STANDARD
                                .decode(text(value))
                                .expect("Secret data is base64");
                            (key.clone(), bytes)
                        })
                        .collect();
                    for (key, value) in document["stringData"].as_object().into_iter().flatten() {
                        data.insert(key.clone(), text(value).as_bytes().to_vec());
                    }
                    cluster.secrets.insert(name, data);
                }
                "ConfigMap" => {
                    let data = document["data"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(key, value)| (key.clone(), text(value).as_bytes().to_vec()))
                        .collect();
                    cluster.config_maps.insert(name, data);
                }
                "Service" => {
                    check_service(document, documents);
                    cluster.services.push(name);
                }
                _ => {}
            }
        }
        cluster
    }

    /// Adds a Secret the user would have made beforehand.
    pub fn add_secret(&mut self, name: &str, data: &[(&str, &[u8])]) {
        let data = data
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
            .collect();
        self.secrets.insert(name.to_owned(), data);
    }

    /// Runs a Job's pod to completion; panics with its logs unless every container exits 0.
    pub fn run_job(&mut self, job: &Value) {
        let name = text(&job["metadata"]["name"]).to_owned();
        let spec = job["spec"]["template"]["spec"].clone();
        assert_eq!(text(&spec["restartPolicy"]), "Never", "{name}");
        let volumes = self.volumes(&name, &spec);
        for container in containers(&spec, "initContainers").chain(containers(&spec, "containers")) {
            self.run_to_completion(&name, &spec, container, &volumes);
        }
    }

    /// Starts one replica of a Deployment's (or StatefulSet's) pod: its init containers to
    /// completion (a native sidecar until its startup probe passes), then its containers in the
    /// background.
    pub async fn start(&mut self, workload: &Value, within: Duration) -> Pod {
        let name = text(&workload["metadata"]["name"]).to_owned();
        let spec = workload["spec"]["template"]["spec"].clone();
        let volumes = self.volumes(&name, &spec);
        for container in containers(&spec, "initContainers") {
            if is_native_sidecar(container) {
                self.run_detached(&name, &spec, container, &volumes);
                self.wait_for_probes(&name, container, &["startupProbe"], within)
                    .await;
            } else {
                self.run_to_completion(&name, &spec, container, &volumes);
            }
        }
        for container in containers(&spec, "containers") {
            self.run_detached(&name, &spec, container, &volumes);
        }
        Pod { name, spec }
    }

    fn run_detached(
        &mut self,
        pod: &str,
        spec: &Value,
        container: &Value,
        volumes: &HashMap<String, PathBuf>,
    ) {
        let id = format!("{pod}-{}", text(&container["name"]));
        let mut command = self.podman.command("podman");
        command.args(["run", "--detach", "--name", &id]);
        self.apply(&mut command, pod, spec, container, volumes);
        output_of(&mut command);
        self.containers.push(id);
    }

    /// Polls the startup and readiness probes of every long-running container (native sidecars
    /// included), as written, until they pass.
    pub async fn wait_ready(&self, pod: &Pod, within: Duration) {
        let running = containers(&pod.spec, "initContainers")
            .filter(|container| is_native_sidecar(container))
            .chain(containers(&pod.spec, "containers"));
        for container in running {
            self.wait_for_probes(&pod.name, container, &["startupProbe", "readinessProbe"], within)
                .await;
        }
    }

    async fn wait_for_probes(&self, pod: &str, container: &Value, probes: &[&str], within: Duration) {
        let started = Instant::now();
        for probe in probes {
            let probe = &container[probe];
            if probe.is_null() {
                continue;
            }
            while !self.probe(container, probe).await {
                assert!(
                    started.elapsed() < within,
                    "{pod} {} never passed its {probe}:\n{}",
                    container["name"],
                    self.logs(&format!("{pod}-{}", text(&container["name"])))
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// A container's output.
    pub fn logs(&self, id: &str) -> String {
        let output = self
            .podman
            .command("podman")
            .args(["logs", id])
            .output()
            .expect("podman logs");
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
    }

    /// A container's effective configuration (`podman inspect`).
    pub fn inspect(&self, id: &str) -> Value {
        let text = output_of(self.podman.command("podman").args(["inspect", id]));
        serde_json::from_str::<Value>(&text).expect("JSON")[0].clone()
    }

    async fn probe(&self, container: &Value, probe: &Value) -> bool {
        let port = |value: &Value| -> u16 {
            match value {
                Value::Number(number) => u16::try_from(number.as_u64().unwrap_or(0)).unwrap_or(0),
                Value::String(name) => containers_port(container, name),
                _ => unsupported("a probe without a port"),
            }
        };
        if let Some(http) = probe.get("httpGet") {
            let scheme = http["scheme"].as_str().unwrap_or("HTTP");
            assert_eq!(scheme, "HTTP", "only plain HTTP probes are emulated");
            let url = format!("http://127.0.0.1:{}{}", port(&http["port"]), text(&http["path"]));
            return reqwest::get(url)
                .await
                .is_ok_and(|response| (200..400).contains(&response.status().as_u16()));
        }
        if let Some(tcp) = probe.get("tcpSocket") {
            return tokio::net::TcpStream::connect(("127.0.0.1", port(&tcp["port"])))
                .await
                .is_ok();
        }
        unsupported("exec probes")
    }

    fn run_to_completion(
        &mut self,
        pod: &str,
        spec: &Value,
        container: &Value,
        volumes: &HashMap<String, PathBuf>,
    ) {
        let id = format!("{pod}-{}", text(&container["name"]));
        let mut command = self.podman.command("podman");
        command.args(["run", "--name", &id]);
        self.apply(&mut command, pod, spec, container, volumes);
        let output = command.output().expect("podman runs");
        assert!(
            output.status.success(),
            "{id} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.containers.push(id);
    }

    /// Every flag the pod and container specs call for.
    fn apply(
        &self,
        command: &mut std::process::Command,
        pod: &str,
        spec: &Value,
        container: &Value,
        volumes: &HashMap<String, PathBuf>,
    ) {
        for unknown in ["envFrom", "lifecycle", "workingDir"] {
            if !container[unknown].is_null() {
                unsupported(unknown);
            }
        }
        command.args(["--network", "host", "--hostname", pod]);
        for service in &self.services {
            for name in [
                service.clone(),
                format!("{service}.{}", self.namespace),
                format!("{service}.{}.svc", self.namespace),
                format!("{service}.{}.svc.cluster.local", self.namespace),
            ] {
                command.arg("--add-host").arg(format!("{name}:127.0.0.1"));
            }
        }
        let pod_context = &spec["securityContext"];
        let context = &container["securityContext"];
        let field = |name: &str| {
            if context[name].is_null() {
                pod_context[name].clone()
            } else {
                context[name].clone()
            }
        };
        let user = field("runAsUser").as_u64();
        let group = field("runAsGroup").as_u64();
        if field("runAsNonRoot") == true {
            assert!(
                user.is_some_and(|uid| uid > 0),
                "runAsNonRoot needs a numeric non-zero runAsUser"
            );
        }
        if let Some(uid) = user {
            command
                .arg("--user")
                .arg(format!("{uid}:{}", group.unwrap_or(uid)));
        }
        if let Some(fs_group) = pod_context["fsGroup"].as_u64() {
            command.arg("--group-add").arg(fs_group.to_string());
        }
        if context["readOnlyRootFilesystem"] == true {
            command.args(["--read-only", "--read-only-tmpfs=false"]);
        }
        if context["allowPrivilegeEscalation"] == false {
            command.args(["--security-opt", "no-new-privileges"]);
        }
        assert_ne!(
            context["privileged"], true,
            "privileged containers are not emulated"
        );
        for capability in context["capabilities"]["drop"].as_array().into_iter().flatten() {
            command.arg("--cap-drop").arg(text(capability));
        }
        for capability in context["capabilities"]["add"].as_array().into_iter().flatten() {
            command.arg("--cap-add").arg(text(capability));
        }
        match text(&field("seccompProfile")["type"]) {
            "RuntimeDefault" | "" => {}
            other => unsupported(&format!("seccomp profile {other}")),
        }
        if let Some(memory) = container["resources"]["limits"]["memory"].as_str() {
            command
                .arg("--memory")
                .arg(memory.replace("Mi", "m").replace("Gi", "g"));
        }
        command
            .arg("--pull")
            .arg(match text(&container["imagePullPolicy"]) {
                "Always" => "always",
                "Never" => "never",
                _ => "missing",
            });
        for env in container["env"].as_array().into_iter().flatten() {
            command
                .arg("--env")
                .arg(format!("{}={}", text(&env["name"]), self.env_value(pod, env)));
        }
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            if !mount["subPath"].is_null() {
                unsupported("subPath");
            }
            let source = &volumes[text(&mount["name"])];
            let mode = if mount["readOnly"] == true { ":ro" } else { "" };
            command.arg("--volume").arg(format!(
                "{}:{}{mode}",
                source.display(),
                text(&mount["mountPath"])
            ));
        }
        if let Some(entrypoint) = container["command"].as_array() {
            command
                .arg("--entrypoint")
                .arg(serde_json::to_string(entrypoint).expect("JSON"));
        }
        command.arg(text(&container["image"]));
        command.args(container["args"].as_array().into_iter().flatten().map(text));
    }

    fn env_value(&self, pod: &str, env: &Value) -> String {
        if let Some(value) = env["value"].as_str() {
            return value.to_owned();
        }
        let from = &env["valueFrom"];
        let key_of = |store: &HashMap<String, BTreeMap<String, Vec<u8>>>, reference: &Value| {
            let name = text(&reference["name"]);
            let data = store
                .get(name)
                .unwrap_or_else(|| panic!("no object {name} for {env}"));
            let value = data
                .get(text(&reference["key"]))
                .unwrap_or_else(|| panic!("no key for {env}"));
            String::from_utf8(value.clone()).expect("text")
        };
        if !from["secretKeyRef"].is_null() {
            return key_of(&self.secrets, &from["secretKeyRef"]);
        }
        if !from["configMapKeyRef"].is_null() {
            return key_of(&self.config_maps, &from["configMapKeyRef"]);
        }
        match text(&from["fieldRef"]["fieldPath"]) {
            "metadata.name" => pod.to_owned(),
            "metadata.namespace" => self.namespace.clone(),
            "status.podIP" => "127.0.0.1".to_owned(),
            other => unsupported(&format!("env from {other}")),
        }
    }

    /// The pod's volumes on the host: Secrets and ConfigMaps in the kubelet's layout, emptyDirs.
    fn volumes(&self, pod: &str, spec: &Value) -> HashMap<String, PathBuf> {
        let root = self.podman.dir().join("pods").join(pod);
        let fs_group = spec["securityContext"]["fsGroup"].as_u64().map(|gid| gid as u32);
        let mut volumes = HashMap::new();
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let name = text(&volume["name"]).to_owned();
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).expect("a volume directory");
            if let Some(secret) = volume.get("secret") {
                let data = &self.secrets[text(&secret["secretName"])];
                project(&dir, data, secret, fs_group);
            } else if let Some(map) = volume.get("configMap") {
                let data = &self.config_maps[text(&map["name"])];
                project(&dir, data, map, fs_group);
            } else if volume.get("emptyDir").is_some() {
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
            } else {
                unsupported(&format!("the volume {volume}"));
            }
            volumes.insert(name, dir);
        }
        volumes
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        for id in &self.containers {
            let _ = self
                .podman
                .command("podman")
                .args(["rm", "--force", "--time", "1", id])
                .output();
        }
    }
}

/// An init container that keeps running beside the app (Kubernetes 1.29+).
fn is_native_sidecar(container: &Value) -> bool {
    container["restartPolicy"] == "Always"
}

fn containers<'v>(spec: &'v Value, field: &str) -> impl Iterator<Item = &'v Value> {
    spec[field].as_array().into_iter().flatten()
}

fn containers_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|port| port["name"] == name)
        .and_then(|port| port["containerPort"].as_u64())
        .and_then(|port| u16::try_from(port).ok())
        .unwrap_or_else(|| panic!("no port named {name} in {}", container["name"]))
}

/// Writes `data` (or its `items`) into `dir` as the kubelet does: the files in a timestamped
/// directory, `..data` pointing at it, and each name a symlink through `..data`.
fn project(dir: &Path, data: &BTreeMap<String, Vec<u8>>, source: &Value, fs_group: Option<u32>) {
    let mode = source["defaultMode"].as_u64().map_or(0o644, |mode| mode as u32);
    let stamped = dir.join("..2026_01_01_00_00_00.000000000");
    std::fs::create_dir_all(&stamped).expect("a data directory");
    let files: Vec<(String, String)> = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .map(|item| (text(&item["key"]).to_owned(), text(&item["path"]).to_owned()))
            .collect(),
        None => data.keys().map(|key| (key.clone(), key.clone())).collect(),
    };
    for (key, path) in &files {
        let bytes = data.get(key).unwrap_or_else(|| panic!("no key {key}"));
        let file = stamped.join(path);
        std::fs::write(&file, bytes).expect("a projected file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
        if let Some(gid) = fs_group {
            std::os::unix::fs::chown(&file, Some(0), Some(gid)).expect("chown");
        }
    }
    std::os::unix::fs::symlink(stamped.file_name().expect("a name"), dir.join("..data")).expect("..data");
    for (_, path) in &files {
        std::os::unix::fs::symlink(Path::new("..data").join(path), dir.join(path)).expect("a link");
    }
    if let Some(gid) = fs_group {
        for entry in [dir.to_path_buf(), stamped] {
            std::os::unix::fs::chown(&entry, Some(0), Some(gid)).expect("chown");
            std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        }
    }
}

/// A Service can be emulated on the host network only if its port is the number its target
/// container listens on.
fn check_service(service: &Value, documents: &[Value]) {
    let selector = service["spec"]["selector"].as_object().expect("a selector");
    let pods = documents.iter().filter_map(|doc| {
        let template = &doc["spec"]["template"];
        let labels = template["metadata"]["labels"].as_object()?;
        selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
            .then_some(&template["spec"])
    });
    let container_ports: Vec<(String, u64)> = pods
        .flat_map(|spec| containers(spec, "containers").chain(containers(spec, "initContainers")))
        .flat_map(|container| container["ports"].as_array().into_iter().flatten())
        .map(|port| {
            (
                text(&port["name"]).to_owned(),
                port["containerPort"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        let target = match &port["targetPort"] {
            Value::String(name) => container_ports
                .iter()
                .find(|(port_name, _)| port_name == name)
                .map(|(_, number)| *number),
            Value::Number(number) => number.as_u64(),
            _ => port["port"].as_u64(),
        };
        assert_eq!(
            target,
            port["port"].as_u64(),
            "Service {} maps port {} elsewhere: not emulable on the host network",
            service["metadata"]["name"],
            port["port"]
        );
    }
}
