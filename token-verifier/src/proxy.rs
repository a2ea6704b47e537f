//! Reverse proxy mode: the verifier listens in front of the app, strips client-sent `X-Auth-*`
//! headers, verifies, and streams the request and the answer (WebSocket upgrades included).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::Uri;
use poem::http::header::{CONNECTION, HOST, UPGRADE};
use poem::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, uri};
use poem::{Body, Endpoint, Request, Response};

use crate::cache::Admission;
use crate::gate::{Decision, Gate};
use crate::http_client::{HttpClient, StreamBody};
use crate::path::CanonicalPath;
use crate::responses::{add_identity, refusal, strip_identity};

/// Headers that belong to one connection and must not be forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// The proxy in front of one upstream.
pub struct Proxy {
    gate: Arc<Gate>,
    client: HttpClient,
    upstream: uri::Authority,
    scheme: uri::Scheme,
}

impl Proxy {
    /// A proxy to `upstream` (`http://host:port` or `https://host:port`).
    pub fn new(gate: Arc<Gate>, client: HttpClient, upstream: &str) -> anyhow::Result<Self> {
        let uri: Uri = upstream.parse()?;
        let scheme = uri.scheme().cloned().unwrap_or(uri::Scheme::HTTP);
        let upstream = uri
            .authority()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the upstream has no host"))?;
        Ok(Self {
            gate,
            client,
            upstream,
            scheme,
        })
    }

    /// Forwards `req` with its path in canonical spelling, so the app routes exactly the path the
    /// decision was made on.
    async fn forward(&self, req: Request, path: &CanonicalPath, admission: Option<&Admission>) -> Response {
        let upgrade = is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| req.take_upgrade().ok()).flatten();
        let remote = req.remote_addr().as_socket_addr().copied();
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_identity(&mut headers);
        strip_hop_by_hop(&mut headers, upgrade);
        if let Some(admission) = admission {
            add_identity(&mut headers, admission);
        }
        add_forwarded(&mut headers, remote);
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{}?{query}", path.spelling),
            None => path.spelling.clone(),
        };
        let target = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.upstream.clone())
            .path_and_query(path_and_query)
            .build();
        let Ok(target) = target else {
            return Response::builder().status(StatusCode::BAD_REQUEST).finish();
        };
        let mut outgoing = hyper::Request::new(StreamBody::from(body));
        *outgoing.method_mut() = parts.method;
        *outgoing.uri_mut() = target;
        *outgoing.headers_mut() = headers;
        let mut answer = match self.client.request(outgoing).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(error = %error, "upstream unreachable");
                return Response::builder().status(StatusCode::BAD_GATEWAY).finish();
            }
        };
        if answer.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut answer);
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) else {
                    return;
                };
                let mut upstream = hyper_util::rt::TokioIo::new(upstream);
                let mut client = client;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
        let (parts, body) = answer.into_parts();
        let mut response = Response::builder()
            .status(parts.status)
            .body(Body::from(body.map_err(io::Error::other).boxed()));
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers, parts.status == StatusCode::SWITCHING_PROTOCOLS);
        *response.headers_mut() = headers;
        response
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .any(|value| {
                value
                    .split(',')
                    .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes hop-by-hop headers and those the `Connection` header names; an upgrade keeps
/// `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && *name == UPGRADE))
        .collect();
    for name in named.iter().chain(
        HOP_BY_HOP
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect::<Vec<_>>()
            .iter(),
    ) {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

fn add_forwarded(headers: &mut HeaderMap, remote: Option<SocketAddr>) {
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(remote) = remote {
        let client = remote.ip().to_string();
        let chain = match headers
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok())
        {
            Some(previous) => format!("{previous}, {client}"),
            None => client,
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert("x-forwarded-for", value);
        }
    }
}

impl Endpoint for Proxy {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Self::Output> {
        let verdict = self
            .gate
            .decide(
                req.method().as_str(),
                req.uri().path(),
                req.uri().query(),
                req.headers(),
            )
            .await;
        Ok(match (verdict.decision, verdict.path) {
            (Decision::Allow(admission), Some(path)) => self.forward(req, &path, Some(&admission)).await,
            (Decision::Public, Some(path)) => self.forward(req, &path, None).await,
            (refused, _) => refusal(&refused),
        })
    }
}
