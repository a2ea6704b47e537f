//! The token verifier sidecar: the data plane of the platform.

pub mod settings;
pub mod startup;
