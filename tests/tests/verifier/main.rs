//! The token verifier against the real auth server, real Redis and real nginx.

mod keys;
mod lost_state;
mod nginx;
mod paths;
mod proxy;
mod rejections;
mod revocation;
mod routing;
mod support;
