//! Forgot-password for an address with an account and for one without: the answers must not
//! differ, in status, body or time. Requests alternate between the two on one connection, so
//! both see the same machine; the report gives each one's latency percentiles.

use std::time::Instant;

use bytes::Bytes;
use serde_json::json;

use crate::load::{Connection, percentile, request};
use crate::platform::start_auth_server;

const ROUNDS: usize = 400;

/// Runs the comparison and prints it.
pub async fn run() -> anyhow::Result<()> {
    let db = platform_tests::migrated_database().await;
    let redis = platform_tests::test_redis();
    let (server, addr) = start_auth_server(
        &db.url,
        &redis.url,
        &[
            ("AUTH_BCRYPT_COST", "4"),
            ("AUTH_RATE_LIMITS__MAIL_REQUESTS_PER_IP", "off"),
            ("AUTH_RATE_LIMITS__MAIL_REQUESTS_PER_ADDRESS", "off"),
            ("AUTH_RATE_LIMITS__REGISTER_PER_IP", "off"),
        ],
    )
    .await;
    let mut connection = Connection::open(addr).await?;
    let post = |path: &str, body: serde_json::Value| {
        request(
            "POST",
            addr,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
    };
    let known = "known@example.com";
    let (status, _) = connection
        .send(post(
            "/api/auth/register",
            json!({ "email": known, "password": "benchmark password 1" }),
        ))
        .await?;
    anyhow::ensure!(status == 201, "registration answered {status}");
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut answers = std::collections::BTreeSet::new();
    for round in 0..ROUNDS * 2 {
        let which = round % 2;
        let email = match which {
            0 => known.to_owned(),
            _ => format!("nobody-{round}@example.com"),
        };
        let started = Instant::now();
        let (status, body) = connection
            .send(post("/api/auth/forgot-password", json!({ "email": email })))
            .await?;
        times[which].push(started.elapsed().as_secs_f64() * 1000.0);
        answers.insert((status, body));
    }
    drop(server);
    anyhow::ensure!(answers.len() == 1, "the answers differ: {answers:?}");
    println!("forgot-password, {ROUNDS} requests each, alternating on one keep-alive connection:");
    for (name, samples) in ["account exists", "no account"].iter().zip(times.iter_mut()) {
        samples.sort_by(f64::total_cmp);
        println!(
            "  {name:<15} p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms",
            percentile(samples, 0.5),
            percentile(samples, 0.9),
            percentile(samples, 0.99)
        );
    }
    println!("  every answer identical: one distinct (status, body) pair");
    Ok(())
}
