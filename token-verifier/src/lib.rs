//! The token verifier sidecar: the data plane of the platform.

pub mod cache;
pub mod forward_auth;
pub mod gate;
pub mod http_client;
pub mod keys;
pub mod metrics;
pub mod original;
pub mod path;
pub mod proxy;
pub mod responses;
pub mod rules;
pub mod settings;
pub mod startup;
