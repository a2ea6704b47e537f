//! A scripted Kubernetes API server: a `kube::Client` over a `tower-test` mock service whose
//! test answers each expected request with real API objects, asserting its method and path and
//! failing on any call it did not expect (kube-rs's own controller examples test this way).

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// One request the code under test made.
pub struct Call {
    /// `GET`, `POST`, `PUT`, …
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string.
    pub query: String,
    /// The JSON body (`Null` without one).
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl Call {
    /// Answers with `status` and `body`.
    pub fn answer(self, status: u16, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("JSON")))
            .expect("a response");
        self.respond.send_response(response);
    }

    /// Answers with the API's `Status` for `code` (404 NotFound, 409 Conflict, …).
    pub fn fail(self, code: u16, reason: &str) {
        let status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("scripted {reason}"), "reason": reason, "code": code,
        });
        self.answer(code, &status);
    }

    /// Answers with the request's own object, as the API server does for a create or replace,
    /// with the `resourceVersion` it now has.
    pub fn echo(self, status: u16, resource_version: &str) -> Value {
        let mut object = self.body.clone();
        object["metadata"]["resourceVersion"] = json!(resource_version);
        self.answer(status, &object);
        object
    }
}

/// The test's end of the API server.
pub struct ScriptedApi {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// How long a call that should come may take to come.
const EXPECT_WITHIN: Duration = Duration::from_secs(30);

impl ScriptedApi {
    /// A client talking to a new scripted API server; namespace `default_namespace`.
    pub fn new(default_namespace: &str) -> (kube::Client, Self) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (kube::Client::new(service, default_namespace), Self { handle })
    }

    /// The next call, which must be `method` on `path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let next = tokio::time::timeout(EXPECT_WITHIN, self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("expected {method} {path}, but nothing came"));
        let (request, respond) =
            next.unwrap_or_else(|| panic!("expected {method} {path}, but the client is gone"));
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("the request body");
        let call = Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            body: match bytes.is_empty() {
                true => Value::Null,
                false => serde_json::from_slice(&bytes).expect("a JSON request body"),
            },
            respond,
        };
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            (method, path),
            "unexpected call (query {:?}, body {})",
            call.query,
            call.body
        );
        call
    }

    /// Fails if any call arrives within `window`.
    pub async fn expect_silence(&mut self, window: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(window, self.handle.next_request()).await {
            panic!("unexpected call {} {}", request.method(), request.uri());
        }
    }
}
