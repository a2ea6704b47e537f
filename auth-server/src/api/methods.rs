//! `Allow` on every 405 (RFC 9110 §15.5.6 requires it): the methods the OpenAPI document lists for
//! the path that was asked for.

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

/// Each documented path (its segments, `None` where a parameter goes) with its methods.
#[derive(Debug, Default)]
pub struct AllowedMethods(Vec<(Vec<Option<String>>, HeaderValue)>);

impl AllowedMethods {
    /// The methods of every path in an OpenAPI document.
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
                    methods.sort();
                    Some((segments, HeaderValue::from_str(&methods.join(", ")).ok()?))
                })
                .collect(),
        )
    }

    /// The methods allowed on `path`, if it is a documented path.
    pub fn for_path(&self, path: &str) -> Option<&HeaderValue> {
        let asked: Vec<&str> = path.split('/').collect();
        self.0.iter().find_map(|(segments, methods)| {
            let matches = segments.len() == asked.len()
                && segments
                    .iter()
                    .zip(&asked)
                    .all(|(segment, asked)| segment.as_deref().is_none_or(|segment| segment == *asked));
            matches.then_some(methods)
        })
    }
}

/// Adds `Allow` to a 405.
pub async fn allow_header<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    allowed: Arc<AllowedMethods>,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    let mut response = endpoint.call(request).await?.into_response();
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allowed.for_path(&path)
    {
        response.headers_mut().insert(header::ALLOW, methods.clone());
    }
    Ok(response)
}
