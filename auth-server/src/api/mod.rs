//! The public HTTP API: poem-openapi operations, Swagger UI at `/docs`, the spec at
//! `/openapi.json`, and every error as `application/problem+json`.

mod admin;
mod auth;
pub mod browser;
mod client;
mod cookies;
mod document;
mod health;
mod json_body;
mod methods;
mod models;
mod recovery;
mod responses;
mod security;
mod sessions;
mod users;
mod well_known;

use std::sync::Arc;

use poem::endpoint::make_sync;
use poem::middleware::CookieJarManager;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, PathPattern, Response, Route};
use poem_openapi::{OpenApiService, Tags};

pub use json_body::BodyLimit;

use crate::error::{ApiError, Problem, problem_response};
use crate::state::SharedState;

/// The API's sections in the documentation.
#[derive(Tags)]
pub enum Tag {
    /// Accounts, logins and the token lifecycle.
    Auth,
    /// The user's sessions.
    Sessions,
    /// The user's profile and account.
    Users,
    /// Public keys and discovery, for token verifiers.
    Keys,
    /// Health probes.
    Health,
    /// Administering accounts (role `admin`).
    Admin,
}

type Apis = (
    auth::AuthApi,
    recovery::RecoveryApi,
    sessions::SessionsApi,
    users::UsersApi,
    well_known::WellKnownApi,
    health::HealthApi,
    admin::AdminApi,
);

/// The OpenAPI service over `state`.
pub fn openapi(state: &SharedState) -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (
            auth::AuthApi::new(state.clone()),
            recovery::RecoveryApi::new(state.clone()),
            sessions::SessionsApi::new(state.clone()),
            users::UsersApi::new(state.clone()),
            well_known::WellKnownApi::new(state.clone()),
            health::HealthApi::new(state.clone()),
            admin::AdminApi::new(state.clone()),
        ),
        "Auth platform",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Accounts, sessions and tokens. Access tokens are JWTs (`typ` `at+jwt`) verifiable with the \
         keys at `/.well-known/jwks.json`; errors are RFC 9457 `application/problem+json`.",
    )
}

/// The OpenAPI document served at `/openapi.json` and shown by Swagger UI.
pub fn document(state: &SharedState) -> serde_json::Value {
    document::complete(&openapi(state).spec())
}

/// The documented path templates (`/api/auth/sessions/{id}`) by the router pattern each becomes
/// (`/api/auth/sessions/:param0`), so metrics speak the document's language.
pub fn route_templates(document: &serde_json::Value) -> std::collections::HashMap<String, String> {
    document["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(template, _)| {
            let mut index = 0;
            let pattern: Vec<String> = template
                .split('/')
                .map(
                    |segment| match segment.starts_with('{') && segment.ends_with('}') {
                        true => {
                            let name = format!(":param{index}");
                            index += 1;
                            name
                        }
                        false => segment.to_owned(),
                    },
                )
                .collect();
            (pattern.join("/"), template.clone())
        })
        .collect()
}

/// Every public route, with the problem-document error mapping, the security headers and CORS
/// for the configured origins.
pub fn routes(
    state: SharedState,
    document: &serde_json::Value,
    body_limit: usize,
    cors: &browser::CorsSettings,
) -> impl Endpoint<Output = Response> + use<> {
    let api = openapi(&state);
    let served = serde_json::to_string_pretty(document).expect("a JSON value serializes");
    // Swagger UI embeds the document verbatim: swap poem-openapi's for the completed one.
    let docs = Html(api.swagger_ui_html().replacen(&api.spec(), &served, 1));
    let spec = make_sync(move |_| {
        Response::builder()
            .content_type("application/json; charset=utf-8")
            .body(served.clone())
    });
    let cors = cors.middleware();
    let allowed = Arc::new(methods::AllowedMethods::from_spec(document));
    let exposure = browser::Exposure {
        https: state.validator.issuer().starts_with("https://"),
        cors: cors.is_some(),
    };
    Route::new()
        .nest("/", api)
        .nest("/docs", Route::new().at("/", make_sync(move |_| docs.clone())))
        .at("/openapi.json", spec)
        .with(CookieJarManager::new())
        .data(state)
        .data(BodyLimit(body_limit))
        .catch_all_error(into_problem)
        .map_to_response()
        .around(move |endpoint, request| methods::methods(endpoint, request, allowed.clone()))
        .around(move |endpoint, request| browser::security_headers(endpoint, request, exposure))
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .map_to_response()
}

/// Every error not already an [`ApiError`] (unknown route, wrong method, an unparsable path
/// parameter, a missing bearer token) becomes the matching problem document too.
async fn into_problem(error: poem::Error) -> Response {
    let pattern = error.data::<PathPattern>().cloned();
    let parameter = error.downcast_ref::<poem_openapi::error::ParseParamError>();
    let mut response = match (error.downcast_ref::<ApiError>(), parameter) {
        (Some(api_error), _) => api_error.to_response(),
        (None, Some(parameter)) => ApiError::MalformedBody {
            field: Some(parameter.name.to_owned()),
            detail: parameter.reason.clone(),
        }
        .to_response(),
        (None, None) => match error.status().as_u16() {
            401 => ApiError::BadToken.to_response(),
            404 => ApiError::NotFound.to_response(),
            413 => ApiError::PayloadTooLarge.to_response(),
            status @ 400..=499 => problem_response(&Problem {
                kind: "urn:auth-platform:problem:bad-request".to_owned(),
                title: error
                    .status()
                    .canonical_reason()
                    .unwrap_or("Bad Request")
                    .to_owned(),
                status,
                detail: error.to_string(),
                errors: None,
            }),
            _ => ApiError::Unexpected(anyhow::anyhow!("{error}")).into_response(),
        },
    };
    if let Some(pattern) = pattern {
        response.set_data(pattern);
    }
    response
}
