//! `migrator`: the Kubernetes Job that owns the Postgres schema.

use clap::Parser;
use migrator::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let settings =
        cli::load_settings(&cli).unwrap_or_else(|error| auth_core::settings::exit_bad_config(&error));
    auth_core::telemetry::init(settings.log_format, &settings.log_level);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime starts");
    std::process::exit(runtime.block_on(cli::run(cli, settings)));
}
