//! The auth server: the control plane of the platform.

pub mod database;
pub mod settings;
pub mod startup;
