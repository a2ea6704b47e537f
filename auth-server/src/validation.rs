//! Field rules for account data, collected so a client sees every problem at once.

use std::sync::LazyLock;

use regex::Regex;

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

// Each rule is one regular expression that JSON Schema (ECMA-262), Rust's `regex` and Python's
// `re` read alike, so the OpenAPI document states exactly the rule the server applies.

/// Unicode's `White_Space` characters: what `str::trim` removes.
macro_rules! whitespace {
    () => {
        r"\u0009-\u000d\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}

/// Control characters (`Cc`).
macro_rules! control {
    () => {
        r"\u0000-\u001f\u007f-\u009f"
    };
}

/// An email address we can store and send to: one `@`, a local part of at most 64 characters, a
/// dotted domain, no spaces or control characters; surrounding whitespace is trimmed off.
pub const EMAIL_PATTERN: &str = concat!(
    "^[",
    whitespace!(),
    "]*",
    "[^",
    whitespace!(),
    control!(),
    "@]{1,64}",
    "@[^",
    whitespace!(),
    control!(),
    "@.]+",
    r"(\.[^",
    whitespace!(),
    control!(),
    "@.]+)+",
    "[",
    whitespace!(),
    "]*$"
);

/// The longest email address, in characters (RFC 5321's 254), surrounding whitespace included.
pub const EMAIL_MAX_CHARS: usize = 254;

/// 3 to 32 letters, digits, `.`, `_` or `-` (the same rule as the database constraint).
pub const USERNAME_PATTERN: &str = "^[A-Za-z0-9._-]{3,32}$";

/// A name: 1 to 100 characters, no control characters.
pub const NAME_PATTERN: &str = concat!("^[^", control!(), "]{1,100}$");

/// A role: lowercase letters, digits, `_` and `-`, starting with a letter, at most 32.
pub const ROLE_PATTERN: &str = "^[a-z][a-z0-9_-]{0,31}$";

/// A compiled rule, built on first use.
struct Rule(LazyLock<Regex>);

macro_rules! rule {
    ($pattern:expr) => {
        Rule(LazyLock::new(|| {
            Regex::new($pattern).expect("the patterns are valid")
        }))
    };
}

static EMAIL: Rule = rule!(EMAIL_PATTERN);
static USERNAME: Rule = rule!(USERNAME_PATTERN);
static NAME: Rule = rule!(NAME_PATTERN);
static ROLE: Rule = rule!(ROLE_PATTERN);

/// The problem with `value` as an email address, if any.
pub fn email(field: &str, value: &str) -> Option<FieldError> {
    let valid = value.chars().count() <= EMAIL_MAX_CHARS && EMAIL.0.is_match(value);
    (!valid).then(|| FieldError::new(field, "not a valid email address"))
}

/// The problem with `value` as a username, if any.
pub fn username(field: &str, value: &str) -> Option<FieldError> {
    (!USERNAME.0.is_match(value)).then(|| FieldError::new(field, "3 to 32 letters, digits, '.', '_' or '-'"))
}

/// The problem with `value` as a name, if any.
pub fn name(field: &str, value: &str) -> Option<FieldError> {
    (!NAME.0.is_match(value))
        .then(|| FieldError::new(field, "1 to 100 characters without control characters"))
}

/// Whether `value` is a role name.
pub fn role(value: &str) -> bool {
    ROLE.0.is_match(value)
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
        for good in [
            "a@example.com",
            "first.last+tag@sub.example.org",
            " padded@example.com\u{a0}",
            "zoë@exämple.de",
        ] {
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
            "a\u{7}b@c.com",
            &format!("{}@x.io", "a".repeat(65)),
            &format!("a@{}.io", "x".repeat(250)),
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
