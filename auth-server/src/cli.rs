//! The `auth-server` command line: serve (the default), or generate a signing key.

use std::path::PathBuf;

use auth_core::cli::{ServiceArgs, run_service};
use clap::{Parser, Subcommand};

use crate::cluster::key_commands;
use crate::keys::{SigningKey, generate_pem, parse_algorithm};
use crate::service::admin::Bootstrap;
use crate::settings::{ENV_PREFIX, Settings, UNPREFIXED};
use crate::startup::Application;

/// Accounts, sessions and tokens for the auth platform.
#[derive(Debug, Parser)]
#[command(name = "auth-server", version)]
pub struct Cli {
    /// Settings.
    #[command(flatten)]
    pub service: ServiceArgs,
    /// Serve, unless a subcommand is given.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new private signing key to DIR/<timestamp>.pem (names sort by age, so the newest
    /// key signs unless AUTH_ACTIVE_KEY says otherwise) and print its kid.
    Keygen {
        /// RS256, ES256 or EdDSA.
        #[arg(long, default_value = "RS256")]
        algorithm: String,
        /// The keys directory (AUTH_KEYS_DIR).
        dir: PathBuf,
    },
    /// The signing keys kept in Kubernetes (AUTH_KUBERNETES__*): show, rotate or revoke them.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Administrators.
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// What to do about administrators.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make an account an administrator, creating it when it does not exist (safe to repeat).
    /// The password of a new account is read from --password-file, or else from stdin.
    Create {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// A file holding the password (one line).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// The password of a new administrator: the file's first line, or stdin's.
fn read_password(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|error| anyhow::anyhow!("--password-file {}: {error}", path.display()))?,
        None => std::io::read_to_string(std::io::stdin())?,
    };
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// What to do with the keys in Kubernetes.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the keys and their state.
    Status,
    /// Publish a new key now; it signs after the propagation delay.
    Rotate,
    /// Revoke a compromised key: its tokens are rejected everywhere and it leaves the JWKS at once.
    Revoke {
        /// The key's kid (base64url: it may start with `-`).
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

/// Runs the command line; never returns.
pub fn main() -> ! {
    let cli = Cli::parse();
    if let Some(Command::Keygen { algorithm, dir }) = cli.command {
        match keygen(&algorithm, &dir) {
            Ok(kid) => {
                println!("{kid}");
                std::process::exit(0)
            }
            Err(error) => {
                eprintln!("error: {error:#}");
                std::process::exit(1)
            }
        }
    }
    let (keys, admin) = match cli.command {
        Some(Command::Keys(keys)) => (Some(keys), None),
        Some(Command::Admin(admin)) => (None, Some(admin)),
        _ => (None, None),
    };
    let settings: Settings = cli
        .service
        .load(ENV_PREFIX, UNPREFIXED)
        .unwrap_or_else(|error| auth_core::settings::exit_bad_config(&error));
    auth_core::telemetry::init(settings.log_format, &settings.log_level);
    if let Some(AdminCommand::Create { email, password_file }) = admin {
        run_service(async move {
            let password = read_password(password_file.as_deref())?;
            let db = crate::database::pool(settings.database_options()?, 1, settings.dependency_timeout);
            let outcome = crate::service::admin::bootstrap(
                &db,
                &email,
                &password,
                settings.bcrypt_cost,
                Bootstrap::Always,
            )
            .await?;
            println!("{outcome}");
            Ok(())
        })
    }
    if let Some(command) = keys {
        run_service(async move {
            let outcome = match command {
                KeysCommand::Status => key_commands::status(&settings).await,
                KeysCommand::Rotate => key_commands::rotate(&settings).await,
                KeysCommand::Revoke { kid } => key_commands::revoke(&settings, &kid).await,
            };
            println!("{}", outcome?.trim_end());
            Ok(())
        })
    }
    run_service(async move { Application::build(settings).await?.run_until_signalled().await })
}

fn keygen(algorithm: &str, dir: &std::path::Path) -> anyhow::Result<String> {
    let algorithm = parse_algorithm(algorithm).map_err(anyhow::Error::msg)?;
    let pem = generate_pem(algorithm)?;
    let name = time::OffsetDateTime::now_utc().format(&time::macros::format_description!(
        "[year][month][day]T[hour][minute][second]Z"
    ))?;
    let key = SigningKey::from_pem(&name, pem.as_bytes())?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{name}.pem"));
    write_private(&path, &pem)?;
    Ok(key.kid)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, KeysCommand};

    #[test]
    fn a_kid_starting_with_a_hyphen_is_a_kid_not_a_flag() {
        let cli = Cli::try_parse_from([
            "auth-server",
            "keys",
            "revoke",
            "-3nIzX0MolH5TO_STGpD0fyAFM4bnjQ55sfs9ApXn08",
        ])
        .expect("parsed");
        match cli.command {
            Some(Command::Keys(KeysCommand::Revoke { kid })) => assert!(kid.starts_with("-3nIz")),
            other => panic!("{other:?}"),
        }
    }
}
