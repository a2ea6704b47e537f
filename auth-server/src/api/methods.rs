//! Methods as RFC 9110 has them: `Allow` on every 405 and on `OPTIONS` (answered 204 for every
//! documented path), and `HEAD` wherever `GET` is (the `GET` answer without its body). The
//! methods come from the OpenAPI document, so the two cannot disagree.

use std::sync::Arc;

use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

/// One documented path: its segments (`None` where a parameter goes) and its methods.
#[derive(Debug)]
struct Path {
    segments: Vec<Option<String>>,
    has_get: bool,
    allow: HeaderValue,
}

/// Every documented path with its methods.
#[derive(Debug, Default)]
pub struct AllowedMethods(Vec<Path>);

impl AllowedMethods {
    /// The methods of every path in an OpenAPI document (plus `HEAD` where `GET` is, and
    /// `OPTIONS`).
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let paths = spec["paths"].as_object().into_iter().flatten();
        Self(
            paths
                .filter_map(|(template, operations)| {
                    let segments = template
                        .split('/')
                        .map(|segment| (!segment.starts_with('{')).then(|| segment.to_owned()))
                        .collect();
                    let mut methods: Vec<String> = operations
                        .as_object()?
                        .keys()
                        .map(|method| method.to_uppercase())
                        .collect();
                    let has_get = methods.iter().any(|method| method == "GET");
                    if has_get {
                        methods.push("HEAD".to_owned());
                    }
                    methods.push("OPTIONS".to_owned());
                    methods.sort();
                    let allow = HeaderValue::from_str(&methods.join(", ")).ok()?;
                    Some(Path {
                        segments,
                        has_get,
                        allow,
                    })
                })
                .collect(),
        )
    }

    /// The documented path `path` is, if any.
    fn find(&self, path: &str) -> Option<&Path> {
        let asked: Vec<&str> = path.split('/').collect();
        self.0.iter().find(|documented| {
            documented.segments.len() == asked.len()
                && documented
                    .segments
                    .iter()
                    .zip(&asked)
                    .all(|(segment, asked)| segment.as_deref().is_none_or(|segment| segment == *asked))
        })
    }
}

/// Answers `OPTIONS`, serves `HEAD` as `GET` (hyper leaves the body out of a `HEAD` answer and
/// keeps its headers), and adds `Allow` to a 405.
pub async fn methods<E: Endpoint>(
    endpoint: Arc<E>,
    mut request: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let documented = allowed.find(request.uri().path());
    match (request.method(), documented) {
        (&Method::OPTIONS, Some(path)) => {
            return Ok(Response::builder()
                .status(StatusCode::NO_CONTENT)
                .header(header::ALLOW, path.allow.clone())
                .finish());
        }
        (&Method::HEAD, Some(path)) if path.has_get => request.set_method(Method::GET),
        _ => {}
    }
    let mut response = endpoint.call(request).await?.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(path) = documented
    {
        response.headers_mut().insert(header::ALLOW, path.allow.clone());
    }
    Ok(response)
}
