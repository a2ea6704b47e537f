//! `platform-bench`: measures the platform on this machine against real PostgreSQL and Redis.
//! Run it with `cargo run --release -p platform-bench -- <server|verifier|restore|hostile|forgot|faults|capacity>`.

mod capacity;
mod ceiling;
mod faults;
mod forgot;
mod hostile;
mod load;
mod platform;
mod restore;
mod server;
mod verifier;

use std::time::Duration;

use clap::{Parser, Subcommand};

/// Benchmarks of the auth platform.
#[derive(Parser)]
#[command(name = "platform-bench")]
struct Cli {
    /// Seconds measured per scenario (after a warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Login against the bcrypt ceiling, refresh and /api/auth/me at 64 connections.
    Server,
    /// /verify in three modes against two ceilings, memory, start-up and propagation.
    Verifier,
    /// Redis flushed: the server's restore of 100,000 revocations and a new sidecar's readiness.
    Restore,
    /// Hostile load: memory per connection, the connection cap, memory after a flood, recovery.
    Hostile,
    /// Forgot-password for a known and an unknown address: answers and latency compared.
    Forgot,
    /// Ten faults injected under load: answers during each, recovery times, broken promises.
    Faults,
    /// The verifier fleet against one Redis: a start-up storm with 100,000 and 1,000,000
    /// revocations, memory per revocation, and 200 followers' Redis load and propagation.
    Capacity,
    /// (internal) the trivial ceiling server.
    #[command(hide = true)]
    CeilingTrivial { listen: String },
    /// (internal) the signature-only ceiling server.
    #[command(hide = true)]
    CeilingSignature {
        listen: String,
        jwks: String,
        #[arg(value_enum)]
        check: ceiling::SignatureCheck,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.target {
            Target::Server => server::run(Duration::from_secs(cli.seconds)).await,
            Target::Verifier => verifier::run(Duration::from_secs(cli.seconds)).await,
            Target::Restore => restore::run().await,
            Target::Hostile => hostile::run().await,
            Target::Forgot => forgot::run().await,
            Target::Faults => faults::run().await,
            Target::Capacity => capacity::run().await,
            Target::CeilingTrivial { listen } => ceiling::serve_trivial(listen).await,
            Target::CeilingSignature { listen, jwks, check } => {
                ceiling::serve_signature_only(listen, jwks, check).await
            }
        }
    })
}
