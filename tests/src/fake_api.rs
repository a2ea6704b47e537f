//! A small stateful Kubernetes API server over HTTP, for running the real `auth-server` binary in
//! Kubernetes mode without a cluster: namespaced objects of any kind kept in memory with
//! increasing `resourceVersion`s, get / create / replace (409 on a stale `resourceVersion` or an
//! existing name) / delete, lists with a `metadata.name` field selector, and watches that replay
//! from a version and then stream — the calls kube's client and its watcher make. It implements
//! the contract it is used for, not Kubernetes: no validation, defaulting or admission.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use poem::http::StatusCode;
use poem::web::Query;
use poem::{Body, Request, Response, Route, handler};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// One change, as a watch reports it.
#[derive(Clone, Debug)]
struct Change {
    version: u64,
    /// `{collection path}/{name}`.
    key: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    version: u64,
    objects: BTreeMap<String, Value>,
    history: Vec<Change>,
    /// Every call, as `METHOD path`, for assertions.
    calls: Vec<String>,
}

/// The API server's state, shared with the test.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    watch: Option<bool>,
    field_selector: Option<String>,
    resource_version: Option<String>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .content_type("application/json")
        .body(body.to_string())
}

fn object_response(code: StatusCode, object: &Value) -> Response {
    Response::builder()
        .status(code)
        .content_type("application/json")
        .body(object.to_string())
}

/// A path's collection (`/api/v1/namespaces/ns/secrets`) and object name, if any.
fn split(path: &str) -> Option<(String, Option<String>)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let collection_length = match *segments.first()? {
        "api" => 5,  // api v1 namespaces ns kind
        "apis" => 6, // apis group version namespaces ns kind
        _ => return None,
    };
    // Cluster-scoped kinds (`/apis/g/v/kind[/name]`) have no namespace segment.
    let length = if segments.get(collection_length - 3) == Some(&"namespaces") {
        collection_length
    } else {
        collection_length - 2
    };
    match segments.len() {
        n if n == length => Some((format!("/{}", segments.join("/")), None)),
        n if n == length + 1 => Some((
            format!("/{}", segments[..length].join("/")),
            Some(segments[length].to_owned()),
        )),
        _ => None,
    }
}

impl FakeApi {
    /// An empty API server.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(1024);
        Self {
            state: Arc::new(Mutex::new(State::default())),
            changes,
        }
    }

    fn record(&self, state: &mut State, key: String, kind: &'static str, object: Value) {
        let change = Change {
            version: state.version,
            key,
            kind,
            object,
        };
        state.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// The object at `path` (`/api/v1/namespaces/ns/secrets/name`), if it exists.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Deletes the object at `path`, as `kubectl delete` would.
    pub fn delete(&self, path: &str) -> bool {
        let mut state = self.state.lock().unwrap();
        let Some(mut object) = state.objects.remove(path) else {
            return false;
        };
        state.version += 1;
        object["metadata"]["resourceVersion"] = json!(state.version.to_string());
        self.record(&mut state, path.to_owned(), "DELETED", object);
        true
    }

    /// Every call so far, as `METHOD path`.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    fn write(&self, method: &str, collection: &str, name: Option<&str>, mut object: Value) -> Response {
        let mut state = self.state.lock().unwrap();
        let name = match (name, object["metadata"]["name"].as_str()) {
            (Some(name), _) => name.to_owned(),
            (None, Some(name)) => name.to_owned(),
            (None, None) => return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "no name"),
        };
        let key = format!("{collection}/{name}");
        let existing = state.objects.get(&key).cloned();
        match (method, &existing) {
            ("POST", Some(_)) => return status(StatusCode::CONFLICT, "AlreadyExists", "already exists"),
            ("PUT", None) => return status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            ("PUT", Some(current)) => {
                let sent = object["metadata"]["resourceVersion"].as_str();
                if sent.is_some_and(|sent| Some(sent) != current["metadata"]["resourceVersion"].as_str()) {
                    return status(StatusCode::CONFLICT, "Conflict", "the object has been modified");
                }
            }
            _ => {}
        }
        state.version += 1;
        let version = state.version.to_string();
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(name);
        metadata["resourceVersion"] = json!(version);
        if let Some(namespace) = collection
            .split('/')
            .skip_while(|part| *part != "namespaces")
            .nth(1)
        {
            metadata["namespace"] = json!(namespace);
        }
        state.objects.insert(key.clone(), object.clone());
        let (code, kind) = match existing {
            Some(_) => (StatusCode::OK, "MODIFIED"),
            None => (StatusCode::CREATED, "ADDED"),
        };
        self.record(&mut state, key, kind, object.clone());
        object_response(code, &object)
    }

    fn list(&self, collection: &str, query: &ListQuery) -> Response {
        let state = self.state.lock().unwrap();
        let wanted = query
            .field_selector
            .as_deref()
            .and_then(|selector| selector.strip_prefix("metadata.name="));
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(key, _)| {
                key.rsplit_once('/').is_some_and(|(parent, name)| {
                    parent == collection && wanted.is_none_or(|wanted| wanted == name)
                })
            })
            .map(|(_, object)| object.clone())
            .collect();
        let list = json!({
            "kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": state.version.to_string()},
            "items": items,
        });
        object_response(StatusCode::OK, &list)
    }

    fn watch(&self, collection: &str, query: &ListQuery) -> Response {
        let since: u64 = query
            .resource_version
            .as_deref()
            .and_then(|version| version.parse().ok())
            .unwrap_or(0);
        let wanted = query
            .field_selector
            .as_deref()
            .and_then(|selector| selector.strip_prefix("metadata.name="))
            .map(|name| format!("{collection}/{name}"));
        let collection = collection.to_owned();
        let matches = move |change: &Change| {
            change.version > since
                && match &wanted {
                    Some(key) => change.key == *key,
                    None => change
                        .key
                        .rsplit_once('/')
                        .is_some_and(|(parent, _)| parent == collection),
                }
        };
        // Subscribe before replaying, so nothing falls between the two.
        let live = self.changes.subscribe();
        let replay: Vec<Change> = self
            .state
            .lock()
            .unwrap()
            .history
            .iter()
            .filter(|change| matches(change))
            .cloned()
            .collect();
        let last_replayed = replay.last().map_or(since, |change| change.version);
        let live = tokio_stream_from(live).filter(move |change| {
            let keep = change.version > last_replayed && matches(change);
            async move { keep }
        });
        let events = futures_util::stream::iter(replay).chain(live).map(|change| {
            let line = json!({"type": change.kind, "object": change.object}).to_string() + "\n";
            Ok::<_, std::io::Error>(bytes::Bytes::from(line))
        });
        Response::builder()
            .content_type("application/json")
            .body(Body::from_bytes_stream(events))
    }

    /// Serves the API on `listener` until the task is dropped.
    pub fn serve(&self, listener: std::net::TcpListener) -> tokio::task::JoinHandle<()> {
        let api = self.clone();
        let app = Route::new().at("/*path", handler_for(api));
        listener.set_nonblocking(true).expect("non-blocking");
        let listener = tokio::net::TcpListener::from_std(listener).expect("a listener");
        crate::process::serve_in_background(listener, app)
    }

    /// A kubeconfig file pointing at `url`, with `namespace` as the default.
    pub fn kubeconfig(url: &str, namespace: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: {namespace}\ncurrent-context: fake\n"
        )
    }
}

impl Default for FakeApi {
    fn default() -> Self {
        Self::new()
    }
}

fn tokio_stream_from(receiver: broadcast::Receiver<Change>) -> impl futures_util::Stream<Item = Change> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(change) => return Some((change, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

fn handler_for(api: FakeApi) -> impl poem::Endpoint {
    #[handler]
    async fn dispatch(
        request: &Request,
        body: Body,
        query: Query<ListQuery>,
        api: poem::web::Data<&FakeApi>,
    ) -> Response {
        let path = request.uri().path().to_owned();
        let method = request.method().as_str().to_owned();
        api.state.lock().unwrap().calls.push(format!("{method} {path}"));
        let Some((collection, name)) = split(&path) else {
            return status(StatusCode::NOT_FOUND, "NotFound", "no such path");
        };
        let body: Value = match body.into_bytes().await {
            Ok(bytes) if !bytes.is_empty() => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        match (method.as_str(), name) {
            ("GET", Some(name)) => match api.get(&format!("{collection}/{name}")) {
                Some(object) => object_response(StatusCode::OK, &object),
                None => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            ("GET", None) if query.watch == Some(true) => api.watch(&collection, &query),
            ("GET", None) => api.list(&collection, &query),
            ("POST", None) => api.write("POST", &collection, None, body),
            ("PUT", Some(name)) => api.write("PUT", &collection, Some(&name), body),
            ("DELETE", Some(name)) => match api.delete(&format!("{collection}/{name}")) {
                true => object_response(StatusCode::OK, &json!({"kind": "Status", "status": "Success"})),
                false => status(StatusCode::NOT_FOUND, "NotFound", "not found"),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "not supported here",
            ),
        }
    }
    poem::EndpointExt::data(dispatch, api)
}

/// What the kubelet does for a ConfigMap mounted as a directory: every sync, when the data
/// changed, the files are written to a new timestamped directory and `..data` is swapped to it
/// atomically (a rename), each name being a symlink through `..data`.
pub fn kubelet_sync(dir: &std::path::Path, data: &BTreeMap<String, String>, generation: u64) {
    let stamped = format!("..{generation:020}");
    std::fs::create_dir_all(dir.join(&stamped)).expect("a data directory");
    for (name, contents) in data {
        std::fs::write(dir.join(&stamped).join(name), contents).expect("a projected file");
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(std::path::Path::new("..data").join(name), link).expect("a link");
        }
    }
    let next = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&next);
    std::os::unix::fs::symlink(&stamped, &next).expect("..data_tmp");
    std::fs::rename(&next, dir.join("..data")).expect("..data swapped");
}

/// Keeps `dir` in step with the ConfigMap at `path` every `period`, as a kubelet would.
pub fn mirror_config_map(
    api: &FakeApi,
    path: &str,
    dir: &std::path::Path,
    period: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    let (api, path, dir) = (api.clone(), path.to_owned(), dir.to_owned());
    tokio::spawn(async move {
        let mut last: Option<BTreeMap<String, String>> = None;
        let mut generation = 0;
        loop {
            if let Some(map) = api.get(&path) {
                let data: BTreeMap<String, String> =
                    serde_json::from_value(map["data"].clone()).unwrap_or_default();
                if last.as_ref() != Some(&data) {
                    generation += 1;
                    kubelet_sync(&dir, &data, generation);
                    last = Some(data);
                }
            }
            tokio::time::sleep(period).await;
        }
    })
}
