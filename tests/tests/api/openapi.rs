//! The OpenAPI document tells the exact truth: schemathesis, an independent property-based tester,
//! runs every check and every phase (examples, coverage, fuzzing, stateful) against a real server.
//!
//! The seed is fixed so CI is reproducible; a larger randomized run, for local use:
//! `API_FUZZ_SEED=$RANDOM API_FUZZ_EXAMPLES=300 cargo test -p platform-tests --test api openapi -- --nocapture`

use std::time::Duration;

use auth_server::rate_limit::RateLimit;
use platform_tests::server::spawn_server_with;
use platform_tests::tools::{repository, schemathesis};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_does_exactly_what_its_openapi_document_says() {
    let server = spawn_server_with(|settings| {
        // The hooks register a fresh administrator whenever the fuzzing revoked its token; limits
        // per address would soon refuse those. Every other limit stays as shipped.
        let unlimited = RateLimit::per(u32::MAX, Duration::from_secs(1));
        settings.rate_limits.register_per_ip = unlimited;
        settings.rate_limits.login_per_ip = unlimited;
        settings.rate_limits.refresh_per_ip = unlimited;
    })
    .await;
    let root = repository();
    let seed = setting("API_FUZZ_SEED", "20261130");
    let examples = setting("API_FUZZ_EXAMPLES", "20");
    let run = tokio::task::spawn_blocking({
        let (url, database) = (server.url.clone(), server.db.url.clone());
        let psql = platform_tests::postgres::server().bindir().join("psql");
        move || {
            schemathesis()
                .arg("--config-file")
                .arg(root.join("tests/schemathesis/schemathesis.toml"))
                .arg("--no-color")
                .args(["run", &format!("{url}/openapi.json")])
                .args([
                    "--checks",
                    "all",
                    "--phases",
                    "examples,coverage,fuzzing,stateful",
                ])
                .args(["--seed", &seed, "--max-examples", &examples])
                .args(["--generation-database", "none", "--workers", "1"])
                .env("PYTHONPATH", &root)
                .env("AUTH_API_URL", &url)
                .env("DATABASE_URL", &database)
                .env("PSQL", psql)
                .output()
                .expect("schemathesis runs")
        }
    })
    .await
    .unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    println!("{report}");
    assert!(
        run.status.success(),
        "schemathesis found disagreements:\n{report}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for phase in ["Examples", "Coverage", "Fuzzing", "Stateful"] {
        assert!(
            report.contains(&format!("✅ {phase}")),
            "the {phase} phase ran and passed:\n{report}"
        );
    }
    assert!(
        report.contains("Re-authenticated"),
        "the fuzzing revoked its own tokens and the hooks logged in afresh:\n{report}"
    );
}
