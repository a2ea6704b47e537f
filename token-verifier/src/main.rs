//! `token-verifier`: the sidecar in front of every service.

use auth_core::cli::{ServiceArgs, run_service};

// jemalloc gives the memory of a connection flood back within a second (glibc kept 20 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
use token_verifier::settings::{ENV_PREFIX, Settings, UNPREFIXED};
use token_verifier::startup::Verifier;

fn main() {
    let args = ServiceArgs::parse(
        "token-verifier",
        "Rejects bad and revoked tokens in front of a service",
    );
    let settings: Settings = args
        .load(ENV_PREFIX, UNPREFIXED)
        .unwrap_or_else(|error| auth_core::settings::exit_bad_config(&error));
    auth_core::telemetry::init(settings.log_format, &settings.log_level);
    run_service(async move { Verifier::build(settings).await?.run_until_signalled().await });
}
