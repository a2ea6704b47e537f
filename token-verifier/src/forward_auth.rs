//! Forward-auth: nginx `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` and Envoy
//! `ext_authz` (HTTP) ask `/verify` about the original request, described the one way the
//! configured proxy describes it (see [`OriginalRequest`]).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, Request, Response, Route, handler};

use crate::gate::{Decision, Gate};
use crate::original::{OriginalRequest, describe};
use crate::responses::{add_identity, carries_identity, refusal};

/// What `/verify` needs besides the gate.
struct ForwardAuth {
    gate: Arc<Gate>,
    source: OriginalRequest,
}

#[handler]
async fn verify(req: &Request, Data(auth): Data<&Arc<ForwardAuth>>) -> Response {
    let gate = &auth.gate;
    let suffix = req.uri().path().strip_prefix("/verify").unwrap_or("");
    // The proxy cannot strip what a client sent alongside (an underscore spelling passes nginx's
    // own header), so a request carrying an identity header of its own never reaches the app.
    let described = match describe(
        auth.source,
        req.method().as_str(),
        suffix,
        req.uri().query(),
        req.headers(),
    ) {
        Ok(described) if !carries_identity(req.headers()) => described,
        _ => return refusal(&gate.bad_request()),
    };
    let verdict = gate
        .decide(
            &described.method,
            &described.path,
            described.query.as_deref(),
            req.headers(),
        )
        .await;
    match verdict.decision {
        Decision::Allow(token) => {
            let mut response = Response::builder().status(StatusCode::OK).finish();
            add_identity(response.headers_mut(), &token);
            response
        }
        decision => refusal(&decision),
    }
}

/// `/verify` (and `/verify/*` for Envoy), any method, reading the original request from `source`.
pub fn routes(gate: Arc<Gate>, source: OriginalRequest) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/verify", verify)
        .at("/verify/*rest", verify)
        .data(Arc::new(ForwardAuth { gate, source }))
}
