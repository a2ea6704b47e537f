//! The `migrator` command line: parsing, running one command, reporting it, and its exit code.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use auth_core::readiness::Readiness;
use auth_core::server::ListenerMetrics;
use auth_core::settings::{SettingsError, SettingsSource};
use auth_core::{admin, listener, shutdown};
use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::Error;
use crate::commands::{self, Change, CheckReport};
use crate::connect::connect_with_retry;
use crate::metrics::Metrics;
use crate::schema::{MigrationStatus, SchemaSummary};
use crate::settings::{ENV_PREFIX, Settings, UNPREFIXED};

/// The migrator's command line.
#[derive(Debug, Parser)]
#[command(
    name = "migrator",
    version,
    about = "Applies and inspects the auth platform's Postgres schema"
)]
pub struct Cli {
    /// A TOML settings file, read between the defaults and the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the result as JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Apply every pending migration.
    Up,
    /// Revert the newest applied migrations.
    Down {
        /// How many migrations to revert.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        steps: u32,
    },
    /// List applied and pending migrations.
    Status,
    /// Revert every migration and apply them again (refused in production).
    Reset {
        /// Confirm that every table and its data may be dropped.
        #[arg(long)]
        yes: bool,
    },
    /// Check connectivity, server version, round-trip latency and pool statistics.
    Check,
    /// Block until the database is reachable and the schema is current (for init containers).
    Wait {
        /// Give up after this long (`30s`, `5m`); defaults to MIGRATOR_CONNECT_TIMEOUT.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<Duration>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Up => "up",
            Command::Down { .. } => "down",
            Command::Status => "status",
            Command::Reset { .. } => "reset",
            Command::Check => "check",
            Command::Wait { .. } => "wait",
        }
    }
}

/// Loads the settings named by the command line and the environment.
pub fn load_settings(cli: &Cli) -> Result<Settings, SettingsError> {
    SettingsSource::new(ENV_PREFIX, UNPREFIXED)
        .with_file(cli.config.as_deref())
        .load()
}

/// What a successful command produced.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Outcome {
    Change(Change),
    Status(Vec<MigrationStatus>),
    Check(CheckReport),
    Wait(SchemaSummary),
}

/// Runs the command and returns the process exit code; prints the result on stdout and one
/// `error: …` line on stderr when it fails, and always logs one summary line.
pub async fn run(cli: Cli, settings: Settings) -> i32 {
    let registry = auth_core::metrics::new_registry("migrator");
    let metrics = Metrics::register(&registry).expect("migrator metrics are registered once");
    let readiness = Readiness::default();
    let connected = readiness.latch("database");
    let (stop_admin, admin_shutdown) = shutdown::channel();
    let admin_task = match &settings.admin_listen {
        Some(addr) => match listener::bind("admin", addr).await {
            Ok(bound) => {
                let [connections] = ListenerMetrics::register(&registry, ["admin"])
                    .expect("listener metrics are registered once");
                Some(tokio::spawn(admin::serve(
                    bound,
                    registry.clone(),
                    readiness.clone(),
                    (connections, auth_core::server::raise_fd_limit()),
                    admin_shutdown,
                )))
            }
            Err(error) => return fail(&cli.command, &Error::Unavailable(error.to_string()), 0.0),
        },
        None => None,
    };

    let started = Instant::now();
    let result = execute(&cli.command, &settings, &connected).await;
    let seconds = started.elapsed().as_secs_f64();
    metrics.duration.set(seconds);
    let code = match result {
        Ok(outcome) => {
            record(&metrics, &outcome);
            metrics.last_result.set(1);
            log_summary(&cli.command, &outcome, seconds);
            print_outcome(&outcome, cli.json);
            0
        }
        Err(error) => {
            metrics.last_result.set(0);
            fail(&cli.command, &error, seconds)
        }
    };
    stop_admin.trigger();
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    code
}

async fn execute(
    command: &Command,
    settings: &Settings,
    connected: &auth_core::readiness::Latch,
) -> Result<Outcome, Error> {
    let options = settings.connect_options()?;
    if let Command::Wait { timeout } = command {
        let timeout = timeout.unwrap_or(settings.connect_timeout);
        let summary = commands::wait(&options, timeout).await?;
        connected.release();
        return Ok(Outcome::Wait(summary));
    }
    if let Command::Reset { yes: false } = command {
        return Err(SettingsError::new(
            "--yes",
            "reset drops every table and their data; confirm with --yes",
        )
        .into());
    }
    let pool = connect_with_retry(&options, settings.connect_timeout).await?;
    connected.release();
    let outcome = match command {
        Command::Up => Outcome::Change(commands::up(&pool, settings.lock_timeout).await?),
        Command::Down { steps } => {
            Outcome::Change(commands::down(&pool, *steps as usize, settings.lock_timeout).await?)
        }
        Command::Reset { .. } => {
            Outcome::Change(commands::reset(&pool, settings.environment, settings.lock_timeout).await?)
        }
        Command::Status => Outcome::Status(commands::status(&pool).await?),
        Command::Check => Outcome::Check(commands::check(&pool).await?),
        Command::Wait { .. } => unreachable!("wait returned above"),
    };
    pool.close().await;
    Ok(outcome)
}

fn record(metrics: &Metrics, outcome: &Outcome) {
    let schema = match outcome {
        Outcome::Change(change) => {
            let changed = change.applied.len() + change.reverted.len();
            metrics.changed.set(i64::try_from(changed).unwrap_or(i64::MAX));
            Some(&change.schema)
        }
        Outcome::Check(report) => Some(&report.schema),
        Outcome::Wait(summary) => Some(summary),
        Outcome::Status(_) => None,
    };
    if let Some(schema) = schema {
        metrics.schema_version.set(schema.version.unwrap_or(0));
        metrics
            .pending
            .set(i64::try_from(schema.pending).unwrap_or(i64::MAX));
    }
}

fn log_summary(command: &Command, outcome: &Outcome, seconds: f64) {
    let (applied, reverted, schema) = match outcome {
        Outcome::Change(change) => (change.applied.len(), change.reverted.len(), Some(&change.schema)),
        Outcome::Check(report) => (0, 0, Some(&report.schema)),
        Outcome::Wait(summary) => (0, 0, Some(summary)),
        Outcome::Status(_) => (0, 0, None),
    };
    tracing::info!(
        command = command.name(),
        result = "success",
        applied,
        reverted,
        schema_version = schema.and_then(|s| s.version),
        pending = schema.map(|s| s.pending),
        duration_seconds = seconds,
        "migrator finished"
    );
}

fn fail(command: &Command, error: &Error, seconds: f64) -> i32 {
    tracing::info!(
        command = command.name(),
        result = error.label(),
        duration_seconds = seconds,
        "migrator finished"
    );
    eprintln!("error: {error}");
    error.exit_code()
}

fn print_outcome(outcome: &Outcome, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(outcome).expect("outcomes serialize")
        );
        return;
    }
    match outcome {
        Outcome::Change(change) => {
            if change.applied.is_empty() && change.reverted.is_empty() {
                println!("nothing to do");
            }
            for version in &change.applied {
                println!("applied  {version:04}");
            }
            for version in &change.reverted {
                println!("reverted {version:04}");
            }
            print_schema(&change.schema);
        }
        Outcome::Status(rows) => {
            println!("{:<8} {:<9} {:<26} DESCRIPTION", "VERSION", "STATE", "APPLIED AT");
            for row in rows {
                let applied_at = row
                    .applied_at
                    .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
                    .unwrap_or_else(|| "-".to_owned());
                let state = serde_json::to_value(row.state).expect("states serialize");
                let state = state.as_str().unwrap_or_default();
                println!(
                    "{:<8} {state:<9} {applied_at:<26} {}",
                    format!("{:04}", row.version),
                    row.description
                );
            }
        }
        Outcome::Check(report) => {
            println!("server version  {}", report.server_version);
            println!(
                "round trip      min {:.2} ms, median {:.2} ms, max {:.2} ms",
                report.latency_ms.min, report.latency_ms.median, report.latency_ms.max
            );
            println!(
                "pool            {} open, {} idle, {} max",
                report.pool.size, report.pool.idle, report.pool.max
            );
            print_schema(&report.schema);
        }
        Outcome::Wait(summary) => print_schema(summary),
    }
}

fn print_schema(schema: &SchemaSummary) {
    let version = schema
        .version
        .map_or_else(|| "none".to_owned(), |v| format!("{v:04}"));
    let state = if schema.current {
        "current".to_owned()
    } else {
        format!("{} pending", schema.pending)
    };
    println!("schema version  {version} ({state})");
}
