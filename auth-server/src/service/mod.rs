//! The account and token flows, between the HTTP handlers and the stores.

pub mod accounts;
pub mod admin;
pub mod changes;
pub mod cleanup;
pub mod grants;
pub mod login;
pub mod logout;
pub mod recovery;
pub mod refresh;
pub mod revocation_guard;
pub mod revoker;
