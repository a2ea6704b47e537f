//! What a new password must be.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::error::FieldError;

/// bcrypt reads at most 72 bytes; longer passwords are refused rather than silently truncated.
pub const MAX_PASSWORD_BYTES: usize = 72;
/// The shortest password accepted (NIST SP 800-63B).
pub const MIN_PASSWORD_BYTES: usize = 8;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("common.txt")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect()
});

/// The problems with `password` as a new password for the account `email`, if any.
pub fn check_new_password(field: &str, password: &str, email: &str) -> Option<FieldError> {
    let problem = if password.len() < MIN_PASSWORD_BYTES {
        format!("must be at least {MIN_PASSWORD_BYTES} bytes")
    } else if password.len() > MAX_PASSWORD_BYTES {
        format!("must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)")
    } else if COMMON.contains(password.to_lowercase().as_str()) {
        "is too common; choose a less guessable password".to_owned()
    } else if email
        .split('@')
        .next()
        .is_some_and(|local| local.len() >= 4 && password.eq_ignore_ascii_case(local))
        || password.eq_ignore_ascii_case(email)
    {
        "must not be your email address".to_owned()
    } else {
        return None;
    };
    Some(FieldError::new(field, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(password: &str) -> Option<String> {
        check_new_password("password", password, "alice.smith@example.com").map(|e| e.message)
    }

    #[test]
    fn lengths_are_counted_in_bytes_and_enforced_at_both_ends() {
        assert!(problem("short7!").unwrap().contains("at least 8"));
        assert_eq!(problem("correct horse battery"), None);
        assert_eq!(problem(&"é".repeat(36)), None, "72 bytes is allowed");
        assert!(
            problem(&"é".repeat(37)).unwrap().contains("at most 72"),
            "74 bytes is refused"
        );
    }

    #[test]
    fn common_passwords_are_refused_in_any_case() {
        assert!(problem("Password1").unwrap().contains("too common"));
        assert!(problem("QWERTYUIOP").unwrap().contains("too common"));
    }

    #[test]
    fn the_email_address_is_refused() {
        assert!(problem("Alice.Smith").unwrap().contains("email"));
        assert!(problem("alice.smith@example.com").unwrap().contains("email"));
    }
}
