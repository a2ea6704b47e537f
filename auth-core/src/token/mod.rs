//! The access-token contract: what the server signs and what every verifier accepts.
//!
//! Validation is strict by design (see DESIGN.md "Tokens"): the key is chosen by `kid` and the
//! algorithm comes from the key; `none`, HMAC, embedded keys (`jwk`, `jku`, `x5u`, `x5c`) and any
//! `crit` are refused; only canonical base64url is accepted; oversized tokens are refused unparsed.

mod bearer;
mod claims;
mod encoding;
mod header;
mod keyset;
mod validator;

pub use bearer::{BearerError, bearer_token};
pub use claims::{AccessClaims, TOKEN_TYPE};
pub use encoding::is_canonical_base64url;
pub use keyset::{KeySet, KeySetError, VerificationKey};
pub use validator::{TokenError, TokenValidator, ValidatorSettings, VerifiedToken};

/// The largest token accepted; anything longer is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[cfg(test)]
mod tests;
