//! The migrator's failures and the exit code each one ends the job with.

use auth_core::settings::{EXIT_BAD_CONFIG, SettingsError};

/// Every way a migrator run can fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting or argument is wrong; nothing was attempted.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The database could not be reached (or the schema did not become current) in time.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused us for a reason retrying cannot fix (credentials, missing database).
    #[error("database refused the connection: {0}")]
    Refused(String),
    /// The operation is not allowed in this environment.
    #[error("{0}")]
    Forbidden(String),
    /// Another migrator held the lock for longer than the lock timeout.
    #[error("another migrator holds the schema lock: {0}")]
    Locked(String),
    /// A migration failed or the recorded history does not match the embedded migrations.
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// The process exit code, following sysexits.h where one fits.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Settings(_) => EXIT_BAD_CONFIG,
            Error::Unavailable(_) | Error::Refused(_) => 69,
            Error::Locked(_) => 75,
            Error::Forbidden(_) => 77,
            Error::Migration(_) | Error::Database(_) => 1,
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Settings(_) => "bad_config",
            Error::Unavailable(_) => "unavailable",
            Error::Refused(_) => "refused",
            Error::Forbidden(_) => "forbidden",
            Error::Locked(_) => "locked",
            Error::Migration(_) => "migration_failed",
            Error::Database(_) => "database_error",
        }
    }
}
