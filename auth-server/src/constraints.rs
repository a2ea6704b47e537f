//! Database constraint violations turned into client errors, by constraint name, in one place.

use crate::error::{ApiError, FieldError};

/// The client error a violated constraint stands for; `None` for errors that are not violations
/// of a constraint clients can cause.
pub fn from_violation(error: &sqlx::Error) -> Option<ApiError> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    Some(match db.constraint()? {
        "users_email_key" => ApiError::Conflict {
            field: "email",
            detail: "an account with this email address already exists",
        },
        "users_username_key" => ApiError::Conflict {
            field: "username",
            detail: "this username is taken",
        },
        "users_email_format" => invalid("email", "not a valid email address"),
        "users_username_format" => invalid("username", "3 to 32 letters, digits, '.', '_' or '-'"),
        "users_names_length" => invalid("first_name", "names are at most 100 characters"),
        _ => return None,
    })
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::Validation(vec![FieldError::new(field, message)])
}
