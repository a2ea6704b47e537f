//! Field rules for account data, collected so a client sees every problem at once.

use crate::error::{ApiError, FieldError};

/// Collects field problems and turns them into one 422.
#[derive(Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    /// Records `problem` if there is one.
    pub fn add(&mut self, problem: Option<FieldError>) {
        self.0.extend(problem);
    }

    /// `Ok` when nothing was recorded.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// An email address we can store and send to: one `@`, a dotted domain, no spaces or controls,
/// at most 254 bytes (RFC 5321), local part at most 64.
pub fn email(field: &str, value: &str) -> Option<FieldError> {
    let valid = value.len() <= 254
        && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && domain.split('.').all(|label| !label.is_empty())
        });
    (!valid).then(|| FieldError::new(field, "not a valid email address"))
}

/// 3 to 32 letters, digits, `.`, `_` or `-` (the same rule as the database constraint).
pub fn username(field: &str, value: &str) -> Option<FieldError> {
    let valid = (3..=32).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    (!valid).then(|| FieldError::new(field, "3 to 32 letters, digits, '.', '_' or '-'"))
}

/// A name: 1 to 100 characters, no control characters.
pub fn name(field: &str, value: &str) -> Option<FieldError> {
    let count = value.chars().count();
    let valid = (1..=100).contains(&count) && !value.chars().any(char::is_control);
    (!valid).then(|| FieldError::new(field, "1 to 100 characters without control characters"))
}

/// The largest profile object, serialized.
pub const MAX_PROFILE_BYTES: usize = 16 * 1024;

/// Free-form profile data: a JSON object of bounded size.
pub fn profile(field: &str, value: &serde_json::Value) -> Option<FieldError> {
    if !value.is_object() {
        return Some(FieldError::new(field, "must be a JSON object"));
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |bytes| bytes.len());
    (size > MAX_PROFILE_BYTES).then(|| FieldError::new(field, format!("at most {MAX_PROFILE_BYTES} bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rules() {
        for good in ["a@example.com", "first.last+tag@sub.example.org"] {
            assert_eq!(email("email", good), None, "{good}");
        }
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            &format!("{}@x.io", "a".repeat(65)),
        ] {
            assert!(email("email", bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn username_and_name_rules() {
        assert_eq!(username("username", "alice_01"), None);
        assert!(username("username", "al").is_some());
        assert!(username("username", "alice smith").is_some());
        assert_eq!(name("first_name", "Zoë"), None);
        assert!(name("first_name", "").is_some());
        assert!(name("first_name", &"x".repeat(101)).is_some());
    }

    #[test]
    fn profiles_are_bounded_objects() {
        assert_eq!(profile("profile", &serde_json::json!({"theme": "dark"})), None);
        assert!(profile("profile", &serde_json::json!([1])).is_some());
        assert!(
            profile(
                "profile",
                &serde_json::json!({"x": "y".repeat(MAX_PROFILE_BYTES)})
            )
            .is_some()
        );
    }
}
