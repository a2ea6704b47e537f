//! The one library shared by every program of the auth platform.
//!
//! It holds the plumbing (settings, telemetry, the admin listener, shutdown) so that the server, the
//! verifier and the migrator behave the same way, and (with the token issues) the token contract.

pub mod admin;
pub mod cli;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod readiness;
pub mod redis;
pub mod revocation;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod token;
