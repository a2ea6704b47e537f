//! The auth server: the control plane of the platform.

pub mod access_tokens;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod constraints;
pub mod database;
pub mod error;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod opaque_tokens;
pub mod passwords;
pub mod rate_limit;
pub mod service;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod validation;
