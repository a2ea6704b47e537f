//! Redis losing the revocation state: how long the auth server takes to notice and restore
//! 100,000 revocations from PostgreSQL, and how long a sidecar started right after the flush
//! takes to become ready (it must wait for the restore: an empty stream proves nothing).

use std::time::{Duration, Instant};

use auth_core::revocation::RedisKeys;
use auth_core::revocation::epoch::{self, Epoch};
use jsonwebtoken::Algorithm;
use platform_tests::RedisServer;
use platform_tests::keys::TestKeys;

use crate::platform::start_auth_server;
use crate::verifier::verifier;

const REVOCATIONS: i64 = 100_000;
const ROUNDS: usize = 5;

/// When each phase of one flush-and-restore was first seen, from the flush.
struct Round {
    restoring: Duration,
    complete: Duration,
    sidecar_ready: Duration,
}

/// Runs the restore benchmark and prints its report.
pub async fn run() -> anyhow::Result<()> {
    let redis = RedisServer::start();
    let redis_url = redis.url(0);
    let db = platform_tests::migrated_database().await;
    // A busy platform's revocations within one token lifetime: mostly single tokens, some
    // sessions, a few users (logout-all, password changes).
    sqlx::query(
        "INSERT INTO revoked_tokens (kind, value, revoked_before, expires_at, reason) \
         SELECT CASE WHEN n % 100 = 0 THEN 'user' WHEN n % 10 = 0 THEN 'sid' ELSE 'jti' END, \
                gen_random_uuid()::text, \
                CASE WHEN n % 100 = 0 THEN now() END, \
                now() + interval '15 minutes', 'benchmark' \
         FROM generate_series(1, $1) AS n",
    )
    .bind(REVOCATIONS)
    .execute(&db.pool().await)
    .await?;
    let keys = TestKeys::new(Algorithm::RS256);
    let keys_dir = keys.dir().display().to_string();
    let (server, server_addr) = start_auth_server(&db.url, &redis_url, &[("AUTH_KEYS_DIR", &keys_dir)]).await;
    let jwks_url = format!("http://{server_addr}/.well-known/jwks.json");
    let mut conn = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let names = RedisKeys::default();

    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
        let flushed = Instant::now();
        let sidecar = tokio::spawn({
            let env = [
                ("REDIS_URL".to_owned(), redis_url.clone()),
                ("VERIFIER_JWKS_URL".to_owned(), jwks_url.clone()),
            ];
            async move {
                let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let (service, _, _) = verifier(&env).await;
                (service, flushed.elapsed())
            }
        });
        let mut restoring = None;
        let complete = loop {
            match epoch::read(&mut conn, &names).await? {
                Epoch::Restoring(_) if restoring.is_none() => restoring = Some(flushed.elapsed()),
                Epoch::Complete(_) => break flushed.elapsed(),
                _ => {}
            }
            anyhow::ensure!(flushed.elapsed() < Duration::from_secs(60), "never restored");
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let (service, sidecar_ready) = sidecar.await?;
        drop(service);
        rounds.push(Round {
            restoring: restoring.unwrap_or(complete),
            complete,
            sidecar_ready,
        });
    }
    let length: usize = redis::cmd("XLEN")
        .arg(names.stream())
        .query_async(&mut conn)
        .await?;
    anyhow::ensure!(length as i64 >= REVOCATIONS, "only {length} entries restored");
    drop(server);

    let column = |pick: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        let all: Vec<String> = values.iter().map(|v| format!("{v:.0}")).collect();
        format!(
            "median {:>6.0} ms   slowest {:>6.0} ms   ({} ms)",
            values[values.len() / 2],
            values[values.len() - 1],
            all.join(", ")
        )
    };
    println!(
        "revocation restore benchmark: release build, {REVOCATIONS} unexpired revocations in PostgreSQL \
         (90 % jti, 9 % sid, 1 % user), FLUSHALL {ROUNDS} times while a new sidecar starts at once"
    );
    println!(
        "flush -> restore under way (noticed)   {}",
        column(|r| ms(r.restoring))
    );
    println!(
        "restore itself (read, publish, commit) {}",
        column(|r| ms(r.complete) - ms(r.restoring))
    );
    println!(
        "flush -> restored (epoch complete)     {}",
        column(|r| ms(r.complete))
    );
    println!(
        "flush -> new sidecar ready             {}",
        column(|r| ms(r.sidecar_ready))
    );
    Ok(())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
