//! The Postgres schema of the auth platform and the job that applies it.
//!
//! The migrations are embedded in the binary and reversible. The server links this library only to
//! ask whether the schema is current; it never migrates at boot.

pub mod cli;
pub mod commands;
pub mod connect;
pub mod error;
pub mod metrics;
pub mod schema;
pub mod settings;

pub use error::Error;
