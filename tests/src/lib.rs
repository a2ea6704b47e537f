//! The test harness: real PostgreSQL and Redis servers started from installed binaries on loopback
//! with random ports and temporary directories, once per test process, cleaned up when the process
//! ends however it ends. Every test gets its own fresh database and its own Redis database.

pub mod binaries;
pub mod command;
pub mod containers;
pub mod fake_api;
pub mod fault_suite;
pub mod floods;
pub mod keys;
pub mod load;
pub mod nginx;
pub mod paths;
pub mod pgbouncer;
pub mod pods;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod scripted_api;
pub mod sentinel;
pub mod server;
pub mod service;
pub mod smtp;
pub mod tls;
pub mod tools;
pub mod verifier;

pub use postgres::{TestDatabase, empty_database, migrated_database};
pub use redis::{RedisServer, TestRedis, test_redis};
