//! The real auth-server binary as the benchmarks run it.

use std::net::SocketAddr;

use platform_tests::process::free_port;
use platform_tests::service::RunningService;

/// Starts `auth-server` on a free port against `database_url` and `redis_url`, with rate limits off
/// (a benchmark is one client hammering) and warnings-only logs, plus `extra` settings; returns it
/// once ready, with its public address.
pub async fn start_auth_server(
    database_url: &str,
    redis_url: &str,
    extra: &[(&str, &str)],
) -> (RunningService, SocketAddr) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("DATABASE_URL", database_url),
        ("REDIS_URL", redis_url),
        ("AUTH_LISTEN", listen.as_str()),
        ("AUTH_RATE_LIMITS__LOGIN_PER_IP", "off"),
        ("AUTH_RATE_LIMITS__LOGIN_PER_ACCOUNT", "off"),
        ("AUTH_RATE_LIMITS__REFRESH_PER_IP", "off"),
        ("AUTH_LOG_LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    let server = RunningService::start("auth-server", "AUTH_", &env).await;
    server.wait_for("/health/ready", 200).await;
    (server, listen.parse().expect("a socket address"))
}
