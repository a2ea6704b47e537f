//! Forward-auth: nginx `auth_request`, Traefik `forwardAuth` and Envoy `ext_authz` (HTTP) ask
//! `/verify` about the original request, described by `X-Forwarded-Method`/`X-Forwarded-Uri` (or
//! `X-Original-*`); Envoy instead appends the original path to `/verify`.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, Request, Response, Route, handler};

use crate::gate::{Decision, Gate};
use crate::responses::{add_identity, refusal};

fn header<'a>(req: &'a Request, names: [&str; 2]) -> Option<&'a str> {
    names
        .into_iter()
        .find_map(|name| req.headers().get(name).and_then(|value| value.to_str().ok()))
}

#[handler]
async fn verify(req: &Request, Data(gate): Data<&Arc<Gate>>) -> Response {
    let method = header(req, ["x-forwarded-method", "x-original-method"]).unwrap_or(req.method().as_str());
    let suffix = req
        .uri()
        .path()
        .strip_prefix("/verify")
        .filter(|rest| rest.starts_with('/'));
    let uri = suffix
        .or_else(|| header(req, ["x-forwarded-uri", "x-original-uri"]))
        .unwrap_or("/");
    // Rules look at the path; the query string is not part of it.
    let path = uri.split(['?', '#']).next().unwrap_or("/");
    match gate.decide(method, path, req.headers()).await {
        Decision::Allow(token) => {
            let mut response = Response::builder().status(StatusCode::OK).finish();
            add_identity(response.headers_mut(), &token);
            response
        }
        decision => refusal(&decision),
    }
}

/// `/verify` (and `/verify/*` for Envoy), any method.
pub fn routes(gate: Arc<Gate>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/verify", verify)
        .at("/verify/*rest", verify)
        .data(gate)
}
