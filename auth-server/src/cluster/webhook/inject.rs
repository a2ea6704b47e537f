//! The sidecar injection itself: an AdmissionReview in, an AdmissionReview out, carrying a JSON
//! patch (RFC 6902) that adds the token verifier in reverse-proxy mode in front of the app.
//!
//! The sidecar's container and volumes come from a template that the Helm chart renders from the
//! same definition as the chart's own sidecar, so the two cannot drift. Pod annotations tune it.
//! Nothing that is not a pod being created for a namespace or pod that asked for injection is
//! touched; a pod that asked but cannot be injected as asked is refused with the reason, because
//! running it without its sidecar would expose the app unauthenticated.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, Volume};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde::Deserialize;
use serde_json::{Value, json};

/// The annotation or label (`"true"`), or the namespace label (`enabled`), that asks for injection.
pub const INJECT: &str = "auth-platform.io/inject";
/// The annotation and label marking an injected pod: the label lets a NetworkPolicy select
/// injected pods, to close their app's own port (still reachable at the pod's IP) to everyone.
pub const INJECTED: &str = "auth-platform.io/injected";
const UPSTREAM_PORT: &str = "auth-platform.io/upstream-port";
const PUBLIC_PATHS: &str = "auth-platform.io/public-paths";
const RULES: &str = "auth-platform.io/rules";
const NATIVE_SIDECAR: &str = "auth-platform.io/native-sidecar";
const RESOURCES: [(&str, &str, &str); 4] = [
    ("auth-platform.io/cpu-request", "requests", "cpu"),
    ("auth-platform.io/memory-request", "requests", "memory"),
    ("auth-platform.io/cpu-limit", "limits", "cpu"),
    ("auth-platform.io/memory-limit", "limits", "memory"),
];
/// The platform's own pods carry this label value and are never injected.
const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "auth-platform");
/// Volumes of the template are renamed with this prefix, so they never collide with the app's.
const VOLUME_PREFIX: &str = "auth-platform-";

/// The sidecar as the chart renders it.
#[derive(Debug, Clone, Deserialize)]
pub struct SidecarTemplate {
    /// The verifier container.
    pub container: Container,
    /// The volumes it mounts.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// How pods are injected.
#[derive(Debug, Clone)]
pub struct Injector {
    /// The sidecar.
    pub template: SidecarTemplate,
    /// Inject as a native sidecar (an init container that keeps running) unless a pod says
    /// otherwise; clusters older than 1.29 need plain containers.
    pub native_sidecars: bool,
}

/// Which pods a webhook entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Pods in a namespace labelled `auth-platform.io/inject=enabled`: every pod unless it says
    /// `auth-platform.io/inject: "false"`.
    Namespace,
    /// Pods elsewhere: those annotated `auth-platform.io/inject: "true"`.
    Annotated,
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// A refusal of a pod that asked for injection.
struct Refusal(String);

impl Injector {
    /// Answers a review (any bytes): never an error, so the API server always gets an answer.
    pub fn review(&self, body: &[u8], scope: Scope) -> AdmissionReview<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
            Ok(review) => review,
            Err(error) => {
                return AdmissionResponse::invalid(format!("not an AdmissionReview: {error}")).into_review();
            }
        };
        let request: AdmissionRequest<DynamicObject> = match review.try_into() {
            Ok(request) => request,
            Err(error) => {
                return AdmissionResponse::invalid(format!("no request in the review: {error}"))
                    .into_review();
            }
        };
        self.respond(&request, scope).into_review()
    }

    fn respond(&self, request: &AdmissionRequest<DynamicObject>, scope: Scope) -> AdmissionResponse {
        let allow = AdmissionResponse::from(request);
        let is_pod_creation = request.kind.group.is_empty()
            && request.kind.kind == "Pod"
            && request.operation == Operation::Create
            && request.sub_resource.is_none();
        let Some(object) = request.object.as_ref().filter(|_| is_pod_creation) else {
            return allow;
        };
        let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
            Ok(pod) => pod,
            Err(error) => {
                // Not a pod we understand: the API server validates it; leave it alone.
                let mut allow = allow;
                allow.warnings = Some(vec![format!(
                    "auth-platform injector skipped an unreadable pod: {error}"
                )]);
                return allow;
            }
        };
        let namespace = request.namespace.as_deref().unwrap_or_default();
        if !self.wants_injection(&pod, namespace, scope) {
            return allow;
        }
        match self.patch(&pod) {
            Ok(patch) => match allow.clone().with_patch(patch) {
                Ok(patched) => patched,
                Err(error) => allow.deny(format!("auth-platform injector: {error}")),
            },
            Err(Refusal(reason)) => allow.deny(format!("auth-platform injector: {reason}")),
        }
    }

    fn wants_injection(&self, pod: &Pod, namespace: &str, scope: Scope) -> bool {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let own = labels.get(PART_OF.0).is_some_and(|value| value == PART_OF.1);
        let already = annotations.get(INJECTED).is_some_and(|value| value == "true")
            || pod.spec.as_ref().is_some_and(|spec| {
                spec.containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                    .any(|container| container.name == self.template.container.name)
            });
        // A label lets the webhook configuration send only the pods that asked (see the chart).
        let request = annotations.get(INJECT).or_else(|| labels.get(INJECT));
        let asked = match (scope, request.map(String::as_str)) {
            (_, Some("true")) => true,
            (Scope::Namespace, Some("false")) => false,
            (Scope::Namespace, _) => true,
            (Scope::Annotated, _) => false,
        };
        asked && !own && !already && namespace != "kube-system"
    }

    fn patch(&self, pod: &Pod) -> Result<Patch, Refusal> {
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let native = match annotations.get(NATIVE_SIDECAR).map(String::as_str) {
            None => self.native_sidecars,
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(Refusal(format!(
                    "{NATIVE_SIDECAR} must be \"true\" or \"false\", not {other:?}"
                )));
            }
        };
        let container = self.container(&annotations, &spec.containers, native)?;
        let container = serde_json::to_value(container).map_err(|error| Refusal(error.to_string()))?;

        let mut operations = Vec::new();
        for (map, present) in [
            ("annotations", pod.metadata.annotations.is_some()),
            ("labels", pod.metadata.labels.is_some()),
        ] {
            if !present {
                operations.push(add(&["metadata", map], json!({})));
            }
            operations.push(add(&["metadata", map, INJECTED], json!("true")));
        }
        match (native, spec.init_containers.is_some()) {
            // First among the init containers, so it is up before the others run.
            (true, true) => operations.push(add(&["spec", "initContainers", "0"], container)),
            (true, false) => operations.push(add(&["spec", "initContainers"], json!([container]))),
            (false, _) => operations.push(add(&["spec", "containers", "-"], container)),
        }
        let volumes = self.template.volumes.iter().map(|volume| {
            let mut volume = volume.clone();
            volume.name = format!("{VOLUME_PREFIX}{}", volume.name);
            serde_json::to_value(volume).map_err(|error| Refusal(error.to_string()))
        });
        let volumes = volumes.collect::<Result<Vec<_>, _>>()?;
        match spec.volumes.is_some() {
            true => operations.extend(
                volumes
                    .into_iter()
                    .map(|volume| add(&["spec", "volumes", "-"], volume)),
            ),
            false if !volumes.is_empty() => operations.push(add(&["spec", "volumes"], Value::Array(volumes))),
            false => {}
        }
        Ok(Patch(operations))
    }

    fn container(
        &self,
        annotations: &BTreeMap<String, String>,
        app: &[Container],
        native: bool,
    ) -> Result<Container, Refusal> {
        let mut container = self.template.container.clone();
        let upstream = match annotations.get(UPSTREAM_PORT) {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port > 0)
                .ok_or_else(|| Refusal(format!("{UPSTREAM_PORT} must be a port number, not {port:?}")))?,
            None => app
                .iter()
                .flat_map(|container| container.ports.iter().flatten())
                .find_map(|port| u16::try_from(port.container_port).ok())
                .ok_or_else(|| Refusal(format!("the app declares no container port; set {UPSTREAM_PORT}")))?,
        };
        let own_ports: Vec<i32> = container
            .ports
            .iter()
            .flatten()
            .map(|port| port.container_port)
            .collect();
        if own_ports.contains(&i32::from(upstream)) {
            return Err(Refusal(format!(
                "{UPSTREAM_PORT}: {upstream} is the sidecar's own port"
            )));
        }
        let mut env = vec![("VERIFIER_UPSTREAM", format!("http://127.0.0.1:{upstream}"))];
        if let Some(paths) = annotations.get(PUBLIC_PATHS) {
            let paths: Vec<&str> = paths
                .split(',')
                .map(str::trim)
                .filter(|path| !path.is_empty())
                .collect();
            env.push((
                "VERIFIER_PUBLIC_PATHS",
                serde_json::to_string(&paths).unwrap_or_default(),
            ));
        }
        if let Some(rules) = annotations.get(RULES) {
            env.push(("VERIFIER_RULES", rules.clone()));
        }
        let variables = container.env.get_or_insert_with(Vec::new);
        for (name, value) in env {
            variables.retain(|variable| variable.name != name);
            variables.push(EnvVar {
                name: name.to_owned(),
                value: Some(value),
                value_from: None,
            });
        }
        // A sidecar that refuses its settings never gets ready and its pod never serves: say why
        // now, to whoever creates the pod.
        let literal = variables
            .iter()
            .filter_map(|variable| Some((variable.name.clone(), variable.value.clone()?)))
            .collect();
        token_verifier::settings::check_route_environment(literal).map_err(|problem| {
            Refusal(format!(
                "{PUBLIC_PATHS} or {RULES}: the sidecar would refuse them: {problem}"
            ))
        })?;
        for (annotation, section, resource) in RESOURCES {
            if let Some(quantity) = annotations.get(annotation) {
                if !is_quantity(quantity) {
                    return Err(Refusal(format!("{annotation}: {quantity:?} is not a quantity")));
                }
                let resources = container.resources.get_or_insert_with(Default::default);
                let map = match section {
                    "requests" => resources.requests.get_or_insert_with(BTreeMap::new),
                    _ => resources.limits.get_or_insert_with(BTreeMap::new),
                };
                map.insert(
                    resource.to_owned(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity(quantity.clone()),
                );
            }
        }
        for mount in container.volume_mounts.iter_mut().flatten() {
            if self
                .template
                .volumes
                .iter()
                .any(|volume| volume.name == mount.name)
            {
                mount.name = format!("{VOLUME_PREFIX}{}", mount.name);
            }
        }
        if native {
            container.restart_policy = Some("Always".to_owned());
        }
        Ok(container)
    }
}

/// A Kubernetes quantity such as `100m`, `64Mi` or `0.5` (the API server has the last word).
fn is_quantity(value: &str) -> bool {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|number| number >= 0.0)
        && ["", "m", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}
