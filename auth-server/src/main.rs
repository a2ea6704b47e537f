//! `auth-server`: accounts, sessions and tokens.

use auth_core::cli::{ServiceArgs, run_service};
use auth_server::settings::{ENV_PREFIX, Settings, UNPREFIXED};
use auth_server::startup::Application;

fn main() {
    let args = ServiceArgs::parse(
        "auth-server",
        "Accounts, sessions and tokens for the auth platform",
    );
    let settings: Settings = args
        .load(ENV_PREFIX, UNPREFIXED)
        .unwrap_or_else(|error| auth_core::settings::exit_bad_config(&error));
    auth_core::telemetry::init(settings.log_format, &settings.log_level);
    run_service(async move {
        Application::build(settings)
            .await?
            .run_until_signalled()
            .await
    });
}
