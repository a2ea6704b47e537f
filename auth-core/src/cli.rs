//! The command line every long-running program shares: `--config FILE`, `--help`, `--version`.

use std::path::PathBuf;

use clap::{Args, Command, FromArgMatches};

use crate::settings::{SettingsError, SettingsSource, Validate};

/// Arguments of the server and the verifier.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// A TOML settings file, read between the defaults and the environment.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ServiceArgs {
    /// Parses this process's arguments for the program `name` (exits on `--help` or a bad flag).
    pub fn parse(name: &'static str, about: &'static str) -> Self {
        let command = Self::augment_args(Command::new(name).about(about).version(env!("CARGO_PKG_VERSION")));
        let matches = command.get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }

    /// Loads settings from defaults, the `--config` file and the environment.
    pub fn load<T>(&self, prefix: &str, unprefixed: &[&str]) -> Result<T, SettingsError>
    where
        T: serde::de::DeserializeOwned + Validate,
    {
        SettingsSource::new(prefix, unprefixed)
            .with_file(self.config.as_deref())
            .load()
    }
}

/// Runs a program's async body on a multi-threaded runtime; a failure becomes one `error: …` line
/// on stderr and exit code 1.
pub fn run_service(body: impl std::future::Future<Output = anyhow::Result<()>>) -> ! {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the runtime starts");
    match runtime.block_on(body) {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopped with an error");
            eprintln!("error: {error:#}");
            std::process::exit(1)
        }
    }
}
