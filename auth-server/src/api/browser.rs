//! What browsers need: CORS for the configured origins only, and security headers on every
//! response.

use std::sync::Arc;
use std::time::Duration;

use poem::http::{HeaderValue, Method, header};
use poem::middleware::Cors;
use poem::{Endpoint, IntoResponse, Request, Response};
use serde::Deserialize;

/// `AUTH_CORS__*`: off (no CORS headers at all) unless origins are listed.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct CorsSettings {
    /// Exact origins allowed to call the API from a browser (`https://app.example.com`).
    pub allowed_origins: Vec<String>,
    /// Whether those origins may send cookies (the refresh cookie).
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsSettings {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsSettings {
    /// Refuses origins that are not exact `scheme://host[:port]` values (no wildcard, no path).
    pub fn problem(&self) -> Option<String> {
        self.allowed_origins.iter().find_map(|origin| {
            let (scheme, rest) = origin.split_once("://")?;
            let valid = matches!(scheme, "http" | "https")
                && !rest.is_empty()
                && !rest.contains(['/', '*', '?', '#', ' ']);
            (!valid).then(|| format!("{origin:?} is not an exact origin like https://app.example.com"))
        })
    }

    /// The CORS middleware, when origins are configured.
    pub fn middleware(&self) -> Option<Cors> {
        if self.allowed_origins.is_empty() {
            return None;
        }
        Some(
            Cors::new()
                .allow_origins(self.allowed_origins.iter().map(String::as_str))
                .allow_credentials(self.allow_credentials)
                .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE])
                .max_age(i32::try_from(self.max_age.as_secs()).unwrap_or(i32::MAX)),
        )
    }
}

/// The API's policy: it serves JSON only, never a page.
const API_POLICY: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// Swagger UI's page inlines its script and styles and fetches the document from this origin.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// How the server is reached.
#[derive(Debug, Clone, Copy)]
pub struct Exposure {
    /// Served as https (the issuer's scheme): HSTS applies.
    pub https: bool,
    /// CORS is on: answers differ by `Origin`, which caches must know.
    pub cors: bool,
}

/// Adds the security headers to a response of `path`: no sniffing, no referrer, no framing, a
/// content security policy, HSTS when served as https, `Vary: Origin` with CORS, and
/// `Cache-Control: no-store` unless the route set its own (only the public keys and discovery
/// do: they carry no token).
pub fn secure(path: &str, exposure: Exposure, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let policy = if path == "/docs" || path.starts_with("/docs/") {
        DOCS_POLICY
    } else {
        API_POLICY
    };
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    if exposure.cors {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if exposure.https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The middleware form of [`secure`].
pub async fn security_headers<E: Endpoint>(
    endpoint: Arc<E>,
    request: Request,
    exposure: Exposure,
) -> poem::Result<Response> {
    let path = request.uri().path().to_owned();
    let response = endpoint.call(request).await?.into_response();
    Ok(secure(&path, exposure, response))
}
