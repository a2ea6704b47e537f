//! The OpenAPI document as served: poem-openapi's output, completed with the rules its derives
//! cannot state, so that `/openapi.json`, Swagger UI, the metric labels and the `Allow` headers
//! all read one document that says exactly what the server does.

use serde_json::{Value, json};

use crate::passwords::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES};
use crate::service::admin::MAX_ROLES;
use crate::validation::{EMAIL_MAX_CHARS, EMAIL_PATTERN, NAME_PATTERN, ROLE_PATTERN, USERNAME_PATTERN};

/// The completed document of `raw`, poem-openapi's JSON.
pub fn complete(raw: &str) -> Value {
    let mut document: Value = serde_json::from_str(raw).expect("poem-openapi writes valid JSON");
    link(&mut document);
    let bodies = request_body_schemas(&document);
    let schemas = &mut document["components"]["schemas"];
    for name in bodies {
        if let Some(schema) = schemas.get_mut(&name) {
            close(schema);
        }
    }
    if let Some(login) = schemas.get_mut("LoginRequest") {
        login["oneOf"] = one_identifier();
    }
    for (schema, field, rule) in field_rules() {
        let property = schemas.pointer_mut(&format!("/{schema}/properties/{field}"));
        if let (Some(Value::Object(property)), Value::Object(rule)) = (property, rule) {
            property.extend(rule);
        }
    }
    document
}

/// The rules of `validation`, the password policy and the roles check, on the request fields
/// they are applied to.
fn field_rules() -> Vec<(&'static str, &'static str, Value)> {
    let email = json!({ "pattern": EMAIL_PATTERN, "maxLength": EMAIL_MAX_CHARS });
    let username = json!({ "pattern": USERNAME_PATTERN });
    let name = json!({ "pattern": NAME_PATTERN });
    // The policy counts UTF-8 bytes and a character takes one to four: these character counts are
    // the tightest bounds that let every valid password through (the description says bytes).
    let password = json!({
        "minLength": MIN_PASSWORD_BYTES.div_ceil(4),
        "maxLength": MAX_PASSWORD_BYTES,
    });
    let roles = json!({ "maxItems": MAX_ROLES, "items": { "type": "string", "pattern": ROLE_PATTERN } });
    let profile = json!({ "type": "object" });
    vec![
        ("RegisterRequest", "email", email.clone()),
        ("AddressRequest", "email", email),
        ("RegisterRequest", "password", password.clone()),
        ("RegisterRequest", "username", username.clone()),
        ("RegisterRequest", "first_name", name.clone()),
        ("RegisterRequest", "last_name", name.clone()),
        ("ProfileUpdate", "username", username),
        ("ProfileUpdate", "first_name", name.clone()),
        ("ProfileUpdate", "last_name", name),
        ("ProfileUpdate", "profile", profile),
        ("ChangePasswordRequest", "new_password", password.clone()),
        ("ResetPasswordRequest", "new_password", password),
        ("RolesRequest", "roles", roles),
    ]
}

/// OpenAPI links: where an id in one answer is the `{id}` of other operations, so that clients
/// (and schemathesis' stateful phase) can follow it.
fn link(document: &mut Value) {
    let account = [
        "getUser",
        "setRoles",
        "lockUser",
        "unlockUser",
        "revokeUserSessions",
        "forcePasswordReset",
        "deleteUser",
    ];
    let sources: [(&str, &str, &str, &str, &[&str]); 3] = [
        (
            "/api/auth/register",
            "post",
            "201",
            "$response.body#/user/id",
            &account,
        ),
        (
            "/api/admin/users",
            "get",
            "200",
            "$response.body#/users/0/id",
            &account,
        ),
        (
            "/api/auth/sessions",
            "get",
            "200",
            "$response.body#/0/id",
            &["revokeSession"],
        ),
    ];
    for (path, method, status, id, targets) in sources {
        let pointer = format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1"));
        if let Some(response) = document.pointer_mut(&pointer) {
            let links = targets.iter().map(|target| {
                (
                    target.to_string(),
                    json!({ "operationId": target, "parameters": { "id": id } }),
                )
            });
            response["links"] = Value::Object(links.collect());
        }
    }
}

/// The component names of every JSON request body.
fn request_body_schemas(document: &Value) -> Vec<String> {
    let operations = document["paths"].as_object().into_iter().flatten();
    operations
        .flat_map(|(_, methods)| methods.as_object().into_iter().flatten())
        .flat_map(|(_, operation)| {
            operation["requestBody"]["content"]
                .as_object()
                .into_iter()
                .flatten()
        })
        .filter_map(|(_, media)| media["schema"]["$ref"].as_str())
        .filter_map(|reference| reference.strip_prefix("#/components/schemas/"))
        .map(str::to_owned)
        .collect()
}

/// What `JsonBody` enforces on every request body: an unknown field is refused (every request type
/// denies unknown fields), an optional field may be `null`, which serde reads as absent, and no
/// string holds a NUL character (PostgreSQL cannot store one).
fn close(schema: &mut Value) {
    let required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
    if let Some(properties) = schema["properties"].as_object_mut() {
        for (name, property) in properties {
            if !required.contains(&Value::String(name.clone())) && property.get("$ref").is_none() {
                property["nullable"] = Value::Bool(true);
            }
            if property["type"] == "string" && property.get("pattern").is_none() {
                property["pattern"] = Value::String(NO_NUL.to_owned());
            }
        }
    }
    schema["additionalProperties"] = Value::Bool(false);
}

/// Any text without a NUL character.
const NO_NUL: &str = r"^[^\u0000]*$";

/// A login names the account by exactly one of `email` and `username` (`auth::login` refuses both
/// or neither); the branches require a string, so the other one may still be `null`.
fn one_identifier() -> Value {
    let branch = |field: &str| {
        json!({
            "required": [field],
            "properties": { field: { "type": "string" } },
        })
    };
    json!([branch("email"), branch("username")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> String {
        json!({
            "paths": {
                "/login": { "post": { "requestBody": { "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/LoginRequest" } } } } } },
                "/me": { "get": { "responses": {} } },
            },
            "components": { "schemas": {
                "LoginRequest": {
                    "type": "object",
                    "required": ["password"],
                    "properties": {
                        "password": { "type": "string" },
                        "email": { "type": "string" },
                    },
                },
                "UserView": { "type": "object", "properties": { "name": { "type": "string" } } },
            } },
        })
        .to_string()
    }

    #[test]
    fn request_bodies_are_closed_and_their_optional_fields_nullable() {
        let document = complete(&raw());
        let login = &document["components"]["schemas"]["LoginRequest"];
        assert_eq!(login["additionalProperties"], false);
        assert_eq!(login["properties"]["email"]["nullable"], true);
        assert_eq!(login["properties"]["password"].get("nullable"), None);
        assert_eq!(login["properties"]["password"]["pattern"], NO_NUL);
        assert_eq!(login["oneOf"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn response_schemas_are_left_as_derived() {
        let document = complete(&raw());
        let view = &document["components"]["schemas"]["UserView"];
        assert_eq!(view.get("additionalProperties"), None);
        assert_eq!(view["properties"]["name"].get("nullable"), None);
    }
}
