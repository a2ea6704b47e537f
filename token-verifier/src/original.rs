//! What the app will take a request to be: in forward-auth, the original request exactly as the
//! one configured proxy describes it; in both modes, every method the app may treat it as.

use poem::http::HeaderMap;
use poem::http::header::CONTENT_TYPE;
use serde::Deserialize;

use crate::rules::Methods;

/// Where forward-auth reads the original request from. Exactly one description is trusted:
/// another proxy's headers arriving too mean a client wrote them, and the request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginalRequest {
    /// `X-Original-Method` and `X-Original-URI` (nginx `auth_request`, HAProxy, Kong).
    XOriginal,
    /// `X-Forwarded-Method` and `X-Forwarded-Uri` (Traefik `forwardAuth`, Caddy `forward_auth`).
    XForwarded,
    /// The request itself: its method, and the path after `/verify` (Envoy `ext_authz` with
    /// `path_prefix: /verify`).
    Path,
}

/// The headers that describe an original request, by description.
const DESCRIPTIONS: [(OriginalRequest, [&str; 2]); 2] = [
    (
        OriginalRequest::XOriginal,
        ["x-original-method", "x-original-uri"],
    ),
    (
        OriginalRequest::XForwarded,
        ["x-forwarded-method", "x-forwarded-uri"],
    ),
];

/// Headers through which apps (Rails, Laravel, Symfony, Express, ASP.NET…) let a request name
/// another method.
const OVERRIDE_HEADERS: [&str; 3] = ["x-http-method-override", "x-http-method", "x-method-override"];

/// The original request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Its method.
    pub method: String,
    /// Its path (raw, not yet canonical).
    pub path: String,
    /// Its query string.
    pub query: Option<String>,
}

/// Why an original request cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DescriptionError {
    /// The configured description is missing, repeated, empty or not text.
    #[error("the original request is not described exactly once")]
    NotDescribed,
    /// Another description (or a path after `/verify`) arrived too.
    #[error("the original request is described more than one way")]
    Conflicting,
}

fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, DescriptionError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .to_str()
            .ok()
            .filter(|text| !text.is_empty())
            .ok_or(DescriptionError::NotDescribed),
        _ => Err(DescriptionError::NotDescribed),
    }
}

/// The original request of a forward-auth call to `/verify{suffix}` with `method`, `query` and
/// `headers`, read from `source` only.
pub fn describe(
    source: OriginalRequest,
    method: &str,
    suffix: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Described, DescriptionError> {
    for (description, names) in DESCRIPTIONS {
        if description != source && names.iter().any(|name| headers.contains_key(*name)) {
            return Err(DescriptionError::Conflicting);
        }
    }
    let Some((_, [method_header, uri_header])) = DESCRIPTIONS.iter().find(|(d, _)| *d == source) else {
        // The request itself.
        let path = if suffix.is_empty() { "/" } else { suffix };
        return Ok(Described {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
        });
    };
    if !suffix.is_empty() {
        return Err(DescriptionError::Conflicting);
    }
    let uri = single(headers, uri_header)?;
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (uri, None),
    };
    Ok(Described {
        method: single(headers, method_header)?.to_owned(),
        path: path.to_owned(),
        query,
    })
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let pair = text.get(at + 1..at + 3)?;
                decoded.push(u8::from_str_radix(pair, 16).ok()?);
                at += 3;
            }
            b'+' => {
                decoded.push(b' ');
                at += 1;
            }
            byte => {
                decoded.push(byte);
                at += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

fn carries_parameters(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_TYPE).iter().any(|value| {
        let media = value.to_str().unwrap_or("").to_ascii_lowercase();
        let media = media.split(';').next().unwrap_or("").trim();
        media == "application/x-www-form-urlencoded"
            || media == "multipart/form-data"
            || media == "application/json"
            || media.ends_with("+json")
    })
}

/// Every method the app may take the request to be: its own, any named by an override header or a
/// `_method` query parameter, or — a `POST` with a form or JSON body, when `body_overrides` — any,
/// since `_method` may hide in a body the verifier does not read. Anything unreadable counts as any.
pub fn methods(method: &str, query: Option<&str>, headers: &HeaderMap, body_overrides: bool) -> Methods {
    if body_overrides && method.eq_ignore_ascii_case("POST") && carries_parameters(headers) {
        return Methods::Any;
    }
    let mut named = vec![method.to_ascii_uppercase()];
    for name in OVERRIDE_HEADERS {
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else {
                return Methods::Any;
            };
            named.extend(value.split(',').map(|m| m.trim().to_ascii_uppercase()));
        }
    }
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match (percent_decode(key), percent_decode(value)) {
            (Some(key), Some(value)) if key == "_method" => named.push(value.trim().to_ascii_uppercase()),
            (Some(_), Some(_)) => {}
            _ => return Methods::Any,
        }
    }
    named.sort();
    named.dedup();
    Methods::Named(named)
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_the_configured_description_is_trusted() {
        use DescriptionError::*;
        let nginx = headers(&[("x-original-method", "GET"), ("x-original-uri", "/admin?x=1")]);
        let described = describe(OriginalRequest::XOriginal, "GET", "", None, &nginx).unwrap();
        assert_eq!(described.path, "/admin");
        assert_eq!(described.query.as_deref(), Some("x=1"));
        // The client's Traefik headers passed through nginx.
        let smuggled = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/admin"),
            ("x-forwarded-uri", "/healthz"),
        ]);
        assert_eq!(
            describe(OriginalRequest::XOriginal, "GET", "", None, &smuggled),
            Err(Conflicting)
        );
        assert_eq!(
            describe(OriginalRequest::XForwarded, "GET", "", None, &nginx),
            Err(Conflicting)
        );
        let twice = headers(&[
            ("x-original-method", "GET"),
            ("x-original-uri", "/a"),
            ("x-original-uri", "/b"),
        ]);
        assert_eq!(
            describe(OriginalRequest::XOriginal, "GET", "", None, &twice),
            Err(NotDescribed)
        );
        let no_method = headers(&[("x-original-uri", "/a")]);
        assert_eq!(
            describe(OriginalRequest::XOriginal, "GET", "", None, &no_method),
            Err(NotDescribed)
        );
        assert_eq!(
            describe(OriginalRequest::XOriginal, "GET", "/admin", None, &nginx),
            Err(Conflicting)
        );
        assert_eq!(
            describe(
                OriginalRequest::Path,
                "DELETE",
                "/admin/1",
                Some("a=b"),
                &HeaderMap::new()
            ),
            Ok(Described {
                method: "DELETE".into(),
                path: "/admin/1".into(),
                query: Some("a=b".into())
            })
        );
        assert_eq!(
            describe(OriginalRequest::Path, "GET", "", None, &nginx),
            Err(Conflicting)
        );
    }

    #[test]
    fn overrides_widen_the_methods_a_rule_sees() {
        let plain = HeaderMap::new();
        assert_eq!(
            methods("get", None, &plain, true),
            Methods::Named(vec!["GET".into()])
        );
        let header = headers(&[("x-http-method-override", "delete")]);
        assert_eq!(
            methods("POST", None, &header, true),
            Methods::Named(vec!["DELETE".into(), "POST".into()])
        );
        assert_eq!(
            methods("POST", Some("a=1&%5Fmethod=PU%54"), &plain, true),
            Methods::Named(vec!["POST".into(), "PUT".into()])
        );
        let form = headers(&[("content-type", "application/x-www-form-urlencoded; charset=utf-8")]);
        assert_eq!(methods("POST", None, &form, true), Methods::Any);
        assert_eq!(
            methods("POST", None, &form, false),
            Methods::Named(vec!["POST".into()])
        );
        assert_eq!(methods("GET", Some("_method=%zz"), &plain, true), Methods::Any);
    }
}
