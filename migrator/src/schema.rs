//! The embedded migrations and how far a database is along them.

use serde::Serialize;
use sqlx::PgConnection;
use sqlx::migrate::Migrator;
use time::OffsetDateTime;

/// Every migration of the platform, embedded at build time from `migrator/migrations`.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Where one migration stands in a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applied, and the recorded checksum matches the embedded SQL.
    Applied,
    /// Not applied yet.
    Pending,
    /// Applied, but the embedded SQL has changed since.
    Modified,
    /// Recorded in the database but unknown to this binary (the database is newer).
    Unknown,
}

/// One row of `migrator status`.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationStatus {
    /// The version (the number the file name starts with).
    pub version: i64,
    /// The description (the rest of the file name).
    pub description: String,
    /// Where it stands.
    pub state: State,
    /// When it was applied, if it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub applied_at: Option<OffsetDateTime>,
}

/// A database's position against the embedded migrations.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaSummary {
    /// The newest applied version, if any.
    pub version: Option<i64>,
    /// How many embedded migrations are applied.
    pub applied: usize,
    /// How many are not.
    pub pending: usize,
    /// Whether every embedded migration is applied unmodified and nothing unknown is recorded.
    pub current: bool,
}

/// The newest embedded version.
pub fn latest_version() -> i64 {
    MIGRATOR
        .iter()
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0)
}

#[derive(sqlx::FromRow)]
struct AppliedRow {
    version: i64,
    description: String,
    installed_on: OffsetDateTime,
    checksum: Vec<u8>,
}

/// Every embedded migration and every recorded one, in version order.
pub async fn status(conn: &mut PgConnection) -> Result<Vec<MigrationStatus>, sqlx::Error> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    let applied: Vec<AppliedRow> = if exists {
        sqlx::query_as(
            "SELECT version, description, installed_on, checksum FROM _sqlx_migrations \
             WHERE success ORDER BY version",
        )
        .fetch_all(&mut *conn)
        .await?
    } else {
        Vec::new()
    };
    let mut rows: Vec<MigrationStatus> = MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| {
            let recorded = applied.iter().find(|row| row.version == migration.version);
            let state = match recorded {
                None => State::Pending,
                Some(row) if *row.checksum == *migration.checksum => State::Applied,
                Some(_) => State::Modified,
            };
            MigrationStatus {
                version: migration.version,
                description: migration.description.to_string(),
                state,
                applied_at: recorded.map(|row| row.installed_on),
            }
        })
        .collect();
    rows.extend(
        applied
            .iter()
            .filter(|row| !MIGRATOR.version_exists(row.version))
            .map(|row| MigrationStatus {
                version: row.version,
                description: row.description.clone(),
                state: State::Unknown,
                applied_at: Some(row.installed_on),
            }),
    );
    rows.sort_by_key(|row| row.version);
    Ok(rows)
}

/// Condenses a status listing.
pub fn summarize(rows: &[MigrationStatus]) -> SchemaSummary {
    let count = |state| rows.iter().filter(|row| row.state == state).count();
    SchemaSummary {
        version: rows
            .iter()
            .filter(|row| row.state != State::Pending)
            .map(|row| row.version)
            .max(),
        applied: count(State::Applied),
        pending: count(State::Pending),
        current: rows.iter().all(|row| row.state == State::Applied),
    }
}

/// The summary of a database, for readiness checks ("is the schema current?").
pub async fn summary(conn: &mut PgConnection) -> Result<SchemaSummary, sqlx::Error> {
    Ok(summarize(&status(conn).await?))
}
