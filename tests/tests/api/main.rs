//! The auth server's HTTP API, over real HTTP, against real PostgreSQL and Redis.

mod account;
mod admin;
mod browser;
mod http;
mod lockout;
mod login;
mod openapi;
mod recovery;
mod register;
mod revocation;
mod sessions;
mod support;
mod tokens;
