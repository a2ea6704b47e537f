//! A JSON request body whose parse errors name the offending field.
//!
//! poem-openapi's own `Json<T>` reports type errors without the field; this extractor documents
//! the same schema (from `T`'s `Object` derive) but parses with serde, tracking the path, so the
//! client gets `{"field": "email", "message": "invalid type: integer `5`, expected a string"}`.

use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body of type `T`, which the request must have unless `OPTIONAL`.
pub struct JsonBody<T, const OPTIONAL: bool = false>(pub T);

/// A JSON body that may be left out, reading as `{}` (for `T`s whose fields are all optional).
pub type OptionalJsonBody<T> = JsonBody<T, true>;

/// The largest body a [`JsonBody`] reads, put in the request data by the app.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

const DEFAULT_LIMIT: usize = 64 * 1024;

const CONTENT_TYPE: &str = "application/json; charset=utf-8";

impl<'a, T: Type + DeserializeOwned, const OPTIONAL: bool> ApiExtractor<'a> for JsonBody<T, OPTIONAL> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: CONTENT_TYPE,
                schema: T::schema_ref(),
            }],
            required: !OPTIONAL,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _options: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let limit = request.data::<BodyLimit>().map_or(DEFAULT_LIMIT, |limit| limit.0);
        let declared = request
            .headers()
            .get(poem::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(ApiError::PayloadTooLarge.into());
        }
        // Also bounds bodies without (or lying about) a Content-Length, such as chunked ones.
        let bytes = body
            .take()?
            .into_bytes_limit(limit)
            .await
            .map_err(|error| match error {
                poem::error::ReadBodyError::PayloadTooLarge => ApiError::PayloadTooLarge,
                _ => ApiError::MalformedBody {
                    field: None,
                    detail: "the body could not be read".to_owned(),
                },
            })?;
        if bytes.is_empty() {
            if OPTIONAL {
                return parse(b"{}").map(JsonBody).map_err(Into::into);
            }
            return Err(ApiError::MalformedBody {
                field: None,
                detail: "the request needs a JSON body".to_owned(),
            }
            .into());
        }
        if !is_json(request.content_type()) {
            return Err(ApiError::MalformedBody {
                field: None,
                detail: "expected Content-Type: application/json".to_owned(),
            }
            .into());
        }
        parse(&bytes).map(JsonBody).map_err(Into::into)
    }
}

fn is_json(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.parse::<mime::Mime>().ok())
        .is_some_and(|mime| {
            mime.type_() == "application"
                && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
        })
}

/// Whether the JSON text holds a string with a NUL character (`\u0000`), which PostgreSQL cannot
/// store in any text or JSON column.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let (mut in_string, mut at) = (false, 0);
    while at < bytes.len() {
        match (in_string, bytes[at]) {
            (true, b'\\') => {
                if bytes[at + 1..].starts_with(b"u0000") {
                    return true;
                }
                at += 1;
            }
            (_, b'"') => in_string = !in_string,
            _ => {}
        }
        at += 1;
    }
    false
}

/// The path of the first string (key or value) in `value` that holds a NUL character.
fn nul_path(value: &serde_json::Value, path: &str) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(text) => text.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join(key))
            } else {
                nul_path(item, &join(key))
            }
        }),
        _ => None,
    }
}

/// Parses `bytes` as `T`, naming the field of the first error; a NUL character in any string is
/// refused by field, before anything reaches the database.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value = parse_typed(bytes)?;
    if has_nul_escape(bytes) {
        let field = serde_json::from_slice(bytes)
            .ok()
            .and_then(|document| nul_path(&document, ""))
            .filter(|path| !path.is_empty());
        return Err(ApiError::MalformedBody {
            field,
            detail: "text must not contain a NUL character (\\u0000)".to_owned(),
        });
    }
    Ok(value)
}

fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        // A syntax error is about the text, not about a field.
        let about_a_field = !matches!(
            inner.classify(),
            serde_json::error::Category::Eof | serde_json::error::Category::Syntax
        );
        let field = (about_a_field && path != ".").then_some(path);
        ApiError::MalformedBody {
            detail: describe(&inner),
            field,
        }
    })?;
    deserializer.end().map_err(|error| ApiError::MalformedBody {
        field: None,
        detail: describe(&error),
    })?;
    Ok(value)
}

/// serde_json's message without its " at line 1 column 12" suffix when that adds nothing useful.
fn describe(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Eof => "the body is not complete JSON".to_owned(),
        serde_json::error::Category::Syntax => format!("the body is not valid JSON ({error})"),
        _ => {
            let text = error.to_string();
            text.split(" at line ").next().unwrap_or(&text).to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    fn field_of(error: ApiError) -> (Option<String>, String) {
        match error {
            ApiError::MalformedBody { field, detail } => (field, detail),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let (field, detail) = field_of(parse::<Login>(br#"{"email": 5, "password": "x"}"#).unwrap_err());
        assert_eq!(field.as_deref(), Some("email"));
        assert!(detail.contains("expected a string"), "{detail}");
    }

    #[test]
    fn a_missing_or_unknown_field_is_reported() {
        let (_, detail) = field_of(parse::<Login>(br#"{"email": "a"}"#).unwrap_err());
        assert!(detail.contains("missing field `password`"), "{detail}");
        let (_, detail) =
            field_of(parse::<Login>(br#"{"email":"a","password":"b","role":"admin"}"#).unwrap_err());
        assert!(detail.contains("unknown field `role`"), "{detail}");
    }

    #[test]
    fn a_nul_character_is_refused_by_field() {
        let (field, detail) =
            field_of(parse::<Login>(br#"{"email": "a\u0000@example.com", "password": "x"}"#).unwrap_err());
        assert_eq!(field.as_deref(), Some("email"));
        assert!(detail.contains("NUL"), "{detail}");
        let literal = parse::<Login>(br#"{"email": "a\\u0000", "password": "x"}"#).unwrap();
        assert_eq!(
            literal.email, "a\\u0000",
            "an escaped backslash before u0000 is no NUL"
        );
    }

    #[test]
    fn invalid_json_and_trailing_garbage_are_refused() {
        let (field, detail) = field_of(parse::<Login>(b"{\"email\": ").unwrap_err());
        assert_eq!(field, None);
        assert_eq!(detail, "the body is not complete JSON");
        assert!(parse::<Login>(br#"{"email":"a","password":"b"} x"#).is_err());
        assert!(parse::<Login>(b"").is_err());
    }
}
