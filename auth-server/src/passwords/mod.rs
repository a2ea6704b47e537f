//! Passwords: the policy every new password must meet, and bcrypt hashing off the async runtime.

mod hasher;
mod policy;

pub use hasher::{HashError, PasswordHasher};
pub use policy::{MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES, check_new_password};
