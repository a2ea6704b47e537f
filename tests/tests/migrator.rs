//! The migrator binary against a real PostgreSQL: schema round trips, concurrency, status, reset,
//! failure modes and the admin listener.

use std::process::Command;
use std::time::Duration;

use platform_tests::command::{Finished, command, run};
use platform_tests::postgres::server;
use platform_tests::{TestDatabase, empty_database};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

const MIGRATIONS: usize = 8;

async fn migrator(db: &TestDatabase, args: &[&str]) -> Finished {
    migrator_with(db, args, &[]).await
}

async fn migrator_with(db: &TestDatabase, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut full = vec![("DATABASE_URL", db.url.as_str())];
    full.extend_from_slice(env);
    run("migrator", args, &full).await
}

fn assert_success(finished: &Finished) {
    assert_eq!(finished.code, 0, "migrator failed: {finished:#?}");
}

fn json(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout).unwrap_or_else(|_| panic!("not JSON: {finished:#?}"))
}

/// The schema as PostgreSQL describes it (tables, columns, constraints, indexes, functions,
/// triggers), without the migration history.
fn dump_schema(db: &TestDatabase) -> String {
    let out = Command::new(server().bindir().join("pg_dump"))
        .args([
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=_sqlx_migrations",
        ])
        .arg(&db.url)
        .output()
        .expect("pg_dump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // `\restrict` lines carry a random key that differs on every dump.
    String::from_utf8(out.stdout)
        .expect("pg_dump writes UTF-8")
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_schema(actual: &str, expected: &str, context: &str) {
    let first_difference = actual.lines().zip(expected.lines()).position(|(a, e)| a != e);
    assert!(
        actual == expected,
        "schema differs {context}: first difference at line {first_difference:?}: {:?} vs {:?}",
        first_difference.and_then(|n| actual.lines().nth(n)),
        first_difference.and_then(|n| expected.lines().nth(n)),
    );
}

async fn user_objects(db: &TestDatabase) -> Vec<String> {
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relname NOT LIKE '_sqlx_migrations%' \
         UNION ALL SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = 'public' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

#[tokio::test]
async fn up_down_up_gives_an_identical_schema_at_every_step() {
    let db = empty_database().await;
    assert_success(&migrator(&db, &["up"]).await);
    let full = dump_schema(&db);
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "password_reset_tokens",
        "email_verification_tokens",
        "revoked_tokens",
        "audit_logs",
        "known_devices",
        "mail_outbox",
    ] {
        assert!(
            full.contains(&format!("CREATE TABLE public.{table} (")),
            "{table} missing"
        );
    }
    assert!(full.contains("CREATE TRIGGER users_set_updated_at"));

    for steps in 1..=MIGRATIONS {
        let down = migrator(&db, &["down", "--steps", &steps.to_string(), "--json"]).await;
        assert_success(&down);
        assert_eq!(json(&down)["reverted"].as_array().unwrap().len(), steps);
        assert_ne!(dump_schema(&db), full, "down --steps {steps} changed nothing");
        assert_success(&migrator(&db, &["up"]).await);
        assert_same_schema(
            &dump_schema(&db),
            &full,
            &format!("after down --steps {steps} and up"),
        );
    }

    assert_success(&migrator(&db, &["down", "--steps", "99"]).await);
    assert_eq!(
        user_objects(&db).await,
        Vec::<String>::new(),
        "down did not remove everything"
    );
}

#[tokio::test]
async fn concurrent_up_runs_all_succeed_and_apply_each_migration_once() {
    let db = empty_database().await;
    let runs = futures_join(4, || migrator(&db, &["up", "--json"])).await;
    let mut applied: Vec<i64> = Vec::new();
    for run in &runs {
        assert_success(run);
        applied.extend(
            json(run)["applied"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap()),
        );
    }
    applied.sort_unstable();
    assert_eq!(applied, (1..=MIGRATIONS as i64).collect::<Vec<_>>(), "{runs:#?}");

    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(rows, MIGRATIONS as i64);
}

async fn futures_join<F, Fut>(n: usize, make: F) -> Vec<Finished>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Finished>,
{
    let mut set = Vec::new();
    for _ in 0..n {
        set.push(make());
    }
    let mut results = Vec::new();
    let mut pinned: Vec<_> = set.into_iter().map(Box::pin).collect();
    // Poll them together so the runs really overlap.
    while !pinned.is_empty() {
        let (result, _, rest) = select_all(pinned).await;
        results.push(result);
        pinned = rest;
    }
    results
}

async fn select_all<Fut: std::future::Future + Unpin>(futures: Vec<Fut>) -> (Fut::Output, usize, Vec<Fut>) {
    let mut futures = futures;
    std::future::poll_fn(move |cx| {
        for index in 0..futures.len() {
            if let std::task::Poll::Ready(output) = std::pin::Pin::new(&mut futures[index]).poll(cx) {
                let mut rest = std::mem::take(&mut futures);
                rest.remove(index);
                return std::task::Poll::Ready((output, index, rest));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[tokio::test]
async fn status_reports_pending_applied_and_modified_migrations() {
    let db = empty_database().await;
    let states = |finished: &Finished| -> Vec<String> {
        json(finished)
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["state"].as_str().unwrap().to_owned())
            .collect()
    };

    let before = migrator(&db, &["status", "--json"]).await;
    assert_success(&before);
    assert_eq!(states(&before), vec!["pending"; MIGRATIONS]);

    assert_success(&migrator(&db, &["up"]).await);
    assert_success(&migrator(&db, &["down", "--steps", "3"]).await);
    let partial = migrator(&db, &["status", "--json"]).await;
    let mut expected = vec!["applied"; MIGRATIONS - 3];
    expected.extend(["pending"; 3]);
    assert_eq!(states(&partial), expected);
    let rows = json(&partial);
    assert_eq!(rows[0]["version"], 1);
    assert_eq!(rows[0]["description"], "users");
    assert!(rows[0]["applied_at"].is_string());
    assert!(rows[MIGRATIONS - 1]["applied_at"].is_null());

    let text = migrator(&db, &["status"]).await;
    assert_success(&text);
    let line = text.stdout.lines().find(|line| line.starts_with("0007")).unwrap();
    assert!(line.contains("pending") && line.contains("mail outbox"), "{line}");
    let line = text.stdout.lines().find(|line| line.starts_with("0004")).unwrap();
    assert!(
        line.contains("applied") && line.contains("revoked tokens"),
        "{line}"
    );

    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
        .execute(&mut conn)
        .await
        .unwrap();
    let modified = migrator(&db, &["status", "--json"]).await;
    assert_eq!(states(&modified)[1], "modified");
    let refused = migrator(&db, &["up"]).await;
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.error_lines(),
        ["error: migration failed: migration 2 was previously applied but has been modified"]
    );
}

#[tokio::test]
async fn reset_is_refused_in_production_and_needs_confirmation_elsewhere() {
    let db = empty_database().await;
    assert_success(&migrator(&db, &["up"]).await);
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x')")
        .execute(&mut conn)
        .await
        .unwrap();
    let count = async |conn: &mut PgConnection| -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(conn)
            .await
            .unwrap()
    };

    let refused = migrator_with(
        &db,
        &["reset", "--yes"],
        &[("MIGRATOR_ENVIRONMENT", "production")],
    )
    .await;
    assert_eq!(refused.code, 77, "{refused:#?}");
    assert_eq!(
        refused.error_lines(),
        ["error: reset is refused in production (MIGRATOR_ENVIRONMENT=production)"]
    );
    assert_eq!(count(&mut conn).await, 1, "a refused reset touched the data");

    let unconfirmed = migrator(&db, &["reset"]).await;
    assert_eq!(unconfirmed.code, 64);
    assert_eq!(unconfirmed.error_lines().len(), 1);
    assert_eq!(count(&mut conn).await, 1);

    let reset = migrator(&db, &["reset", "--yes", "--json"]).await;
    assert_success(&reset);
    assert_eq!(json(&reset)["schema"]["current"], true);
    assert_eq!(count(&mut conn).await, 0, "reset kept the data");
}

#[tokio::test]
async fn a_bad_database_url_is_one_clear_line_without_the_password() {
    let db = TestDatabase {
        name: String::new(),
        url: "postgres://admin:hunter2@[::1/auth".into(),
    };
    let finished = migrator(&db, &["up"]).await;
    assert_eq!(finished.code, 64, "{finished:#?}");
    let lines: Vec<&str> = finished.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{finished:#?}");
    assert!(
        lines[0].starts_with("error: invalid configuration: DATABASE_URL: "),
        "{}",
        lines[0]
    );
    assert!(!finished.stderr.contains("hunter2"));
}

#[tokio::test]
async fn a_bad_setting_names_the_variable() {
    let db = empty_database().await;
    let finished = migrator_with(&db, &["up"], &[("MIGRATOR_CONNECT_TIMEOUT", "soon")]).await;
    assert_eq!(finished.code, 64);
    assert!(
        finished
            .stderr
            .starts_with("error: invalid configuration: MIGRATOR_CONNECT_TIMEOUT: "),
        "{finished:#?}"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_retried_then_reported() {
    let port = platform_tests::process::free_port();
    let db = TestDatabase {
        name: String::new(),
        url: format!("postgres://postgres@127.0.0.1:{port}/x"),
    };
    let finished = migrator_with(&db, &["up"], &[("MIGRATOR_CONNECT_TIMEOUT", "2s")]).await;
    assert_eq!(finished.code, 69, "{finished:#?}");
    let errors = finished.error_lines();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("error: database unavailable: not reachable after 2s"),
        "{}",
        errors[0]
    );
    let retries = finished
        .log_lines()
        .iter()
        .filter(|line| line["message"] == "database not reachable yet")
        .count();
    assert!(retries >= 2, "expected retries with backoff: {finished:#?}");
}

#[tokio::test]
async fn a_database_that_comes_up_later_is_waited_for() {
    let db = empty_database().await;
    let port = platform_tests::process::free_port();
    let late = TestDatabase {
        name: db.name.clone(),
        url: format!("postgres://postgres@127.0.0.1:{port}/{}", db.name),
    };
    let run = tokio::spawn(async move {
        migrator_with(&late, &["up", "--json"], &[("MIGRATOR_CONNECT_TIMEOUT", "60s")]).await
    });
    // The "database" appears after the migrator has failed to connect a few times.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let proxy = tokio::spawn(proxy_to_postgres(port));
    let finished = run.await.unwrap();
    proxy.abort();
    assert_success(&finished);
    assert_eq!(json(&finished)["applied"].as_array().unwrap().len(), MIGRATIONS);
    assert!(
        finished
            .log_lines()
            .iter()
            .any(|line| line["message"] == "database not reachable yet"),
        "the migrator never had to wait: {finished:#?}"
    );
}

/// Listens on `port` and forwards every connection to the test PostgreSQL.
async fn proxy_to_postgres(port: u16) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    loop {
        let (mut inbound, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let mut outbound = tokio::net::TcpStream::connect(("127.0.0.1", server().port()))
                .await
                .unwrap();
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}

#[tokio::test]
async fn credentials_or_database_problems_fail_without_waiting_for_the_timeout() {
    let db = TestDatabase {
        name: String::new(),
        url: format!(
            "postgres://postgres@127.0.0.1:{}/no_such_database",
            server().port()
        ),
    };
    let finished = tokio::time::timeout(
        Duration::from_secs(60),
        migrator_with(&db, &["up"], &[("MIGRATOR_CONNECT_TIMEOUT", "10m")]),
    )
    .await
    .expect("a missing database must not be retried until the timeout");
    assert_eq!(finished.code, 69);
    let errors = finished.error_lines();
    assert!(
        errors[0].starts_with("error: database refused the connection: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("no_such_database"), "{errors:?}");
}

#[tokio::test]
async fn a_held_lock_times_out_with_a_clear_error() {
    let db = empty_database().await;
    let mut holder = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(7022647185815201650)")
        .execute(&mut holder)
        .await
        .unwrap();
    let finished = migrator_with(&db, &["up"], &[("MIGRATOR_LOCK_TIMEOUT", "1s")]).await;
    assert_eq!(finished.code, 75, "{finished:#?}");
    assert_eq!(
        finished.error_lines(),
        ["error: another migrator holds the schema lock: gave up after 1s (MIGRATOR_LOCK_TIMEOUT)"]
    );
    assert_eq!(user_objects(&db).await, Vec::<String>::new());
}

#[tokio::test]
async fn wait_blocks_until_the_schema_is_current() {
    let db = empty_database().await;
    let short = migrator(&db, &["wait", "--timeout", "1s"]).await;
    assert_eq!(short.code, 69);
    assert_eq!(
        short.error_lines(),
        ["error: database unavailable: not ready after 1s: schema not current (8 pending)"]
    );

    let waiter = {
        let db = db.clone();
        tokio::spawn(async move { migrator(&db, &["wait", "--timeout", "60s"]).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !waiter.is_finished(),
        "wait returned before the schema was current"
    );
    assert_success(&migrator(&db, &["up"]).await);
    let waited = waiter.await.unwrap();
    assert_success(&waited);
    assert!(
        waited.stdout.contains("schema version  0008 (current)"),
        "{waited:#?}"
    );
}

#[tokio::test]
async fn check_reports_version_latency_and_pool() {
    let db = empty_database().await;
    let finished = migrator(&db, &["check", "--json"]).await;
    assert_success(&finished);
    let report = json(&finished);
    assert!(
        report["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    let latency = &report["latency_ms"];
    assert!(latency["min"].as_f64().unwrap() <= latency["median"].as_f64().unwrap());
    assert!(latency["median"].as_f64().unwrap() <= latency["max"].as_f64().unwrap());
    assert_eq!(report["pool"]["max"], 2);
    assert!(report["pool"]["size"].as_u64().unwrap() >= 1);
    assert_eq!(report["schema"]["pending"], MIGRATIONS);
}

#[tokio::test]
async fn runs_end_with_a_structured_summary_line() {
    let db = empty_database().await;
    let finished = migrator(&db, &["up"]).await;
    assert_success(&finished);
    let summary = finished
        .log_lines()
        .into_iter()
        .find(|line| line["message"] == "migrator finished")
        .expect("a summary line");
    assert_eq!(summary["command"], "up");
    assert_eq!(summary["result"], "success");
    assert_eq!(summary["applied"], MIGRATIONS);
    assert_eq!(summary["schema_version"], MIGRATIONS);
    assert!(summary["duration_seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn the_admin_listener_serves_metrics_and_health_while_running() {
    let db = empty_database().await;
    let port = platform_tests::process::free_port();
    let listen = format!("127.0.0.1:{port}");
    let waiter = command(
        "migrator",
        &["wait", "--timeout", "60s"],
        &[("DATABASE_URL", &db.url), ("MIGRATOR_ADMIN_LISTEN", &listen)],
    )
    .spawn()
    .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://{listen}");
    let metrics = loop {
        if let Ok(response) = client.get(format!("{base}/metrics")).send().await {
            break response.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(metrics.contains("migrator_last_run_success -1"), "{metrics}");
    assert!(
        metrics.contains("migrator_process_resident_memory_bytes"),
        "{metrics}"
    );
    let live = client.get(format!("{base}/health/live")).send().await.unwrap();
    assert_eq!(live.status(), 200);
    let ready = client.get(format!("{base}/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "waiting for the schema is not ready");

    assert_success(&migrator(&db, &["up"]).await);
    let output = waiter.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
}
