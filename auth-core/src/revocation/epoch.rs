//! The revocation epoch: how a reader of Redis tells "nothing is revoked" from "Redis lost the
//! revocation state".
//!
//! The key `{ns}:revocations:epoch` exists only while Redis holds every revocation that can still
//! matter. The server writes it at the end of a complete restore from PostgreSQL, and a flush, a
//! restart without persistence or an empty replica removes it with everything else. Its value is
//! either `restoring:<token>` (a restore is under way) or `<token>` (restored; a random 128-bit
//! id, new for every restore). Readers vouch for what they read only while they see the same
//! complete epoch before and after reading it.
//!
//! A restore is claimed and committed with two scripts on that one key, so no ordering of events
//! opens a window: a restore first marks the key `restoring:<token>` (or adopts the token of a
//! restore already under way), only then reads PostgreSQL, republishes, and commits by turning
//! `restoring:<token>` into `<token>` — which fails when a flush during the restore removed the
//! mark, and the restore starts over. Two servers restoring at once share one token.

use futures_util::future::BoxFuture;
use redis::aio::ConnectionLike;

use super::RedisKeys;
use crate::readiness::ReadinessCheck;
use crate::redis::RedisPool;

const RESTORING: &str = "restoring:";

/// What the epoch key says about the revocation state in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Epoch {
    /// No key: Redis lost its data (or was never restored). The state is unknown.
    Missing,
    /// A restore is under way. The state is unknown until it commits.
    Restoring(String),
    /// Everything that can still matter is in Redis, as of the restore with this token.
    Complete(String),
}

impl Epoch {
    /// The epoch a value of the key stands for.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            None => Epoch::Missing,
            Some(value) => match value.strip_prefix(RESTORING) {
                Some(token) => Epoch::Restoring(token.to_owned()),
                None => Epoch::Complete(value.to_owned()),
            },
        }
    }

    /// The token of a complete epoch.
    pub fn complete(&self) -> Option<&str> {
        match self {
            Epoch::Complete(token) => Some(token),
            _ => None,
        }
    }
}

/// Reads the epoch.
pub async fn read<C: ConnectionLike>(conn: &mut C, keys: &RedisKeys) -> redis::RedisResult<Epoch> {
    let value: Option<String> = redis::cmd("GET").arg(keys.epoch()).query_async(conn).await?;
    Ok(Epoch::parse(value.as_deref()))
}

/// What [`begin_restore`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreClaim {
    /// Redis holds a complete epoch (not the one to replace): nothing was lost.
    Intact(String),
    /// A restore with this token must run (ours, or one under way that this server joins).
    Restore(String),
}

// Marks a restore under way unless Redis is intact; a complete epoch equal to ARGV[2] is replaced
// too (the server saw Redis change under it, so what it holds may be older than the epoch says).
const BEGIN: &str = r"
local value = redis.call('GET', KEYS[1])
if value == false or (ARGV[2] ~= '' and value == ARGV[2]) then
  value = 'restoring:' .. ARGV[1]
  redis.call('SET', KEYS[1], value)
end
return value";

// Completes the restore of token ARGV[1], unless the mark is gone (flushed) or another restore
// replaced it; committing twice (two servers sharing a token) succeeds twice.
const COMMIT: &str = r"
local value = redis.call('GET', KEYS[1])
if value == 'restoring:' .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
if value == ARGV[1] then return 1 end
return 0";

/// Claims a restore: marks one under way with a new token when the epoch is missing (or equals
/// `replace`), joins the one under way, or reports Redis intact.
pub async fn begin_restore<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    replace: Option<&str>,
) -> redis::RedisResult<RestoreClaim> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let value: String = redis::cmd("EVAL")
        .arg(BEGIN)
        .arg(1)
        .arg(keys.epoch())
        .arg(&token)
        .arg(replace.unwrap_or(""))
        .query_async(conn)
        .await?;
    Ok(match value.strip_prefix(RESTORING) {
        Some(token) => RestoreClaim::Restore(token.to_owned()),
        None => RestoreClaim::Intact(value),
    })
}

/// Commits the restore of `token`; `false` when Redis lost the mark meanwhile (the restore must run
/// again).
pub async fn commit_restore<C: ConnectionLike>(
    conn: &mut C,
    keys: &RedisKeys,
    token: &str,
) -> redis::RedisResult<bool> {
    let committed: i64 = redis::cmd("EVAL")
        .arg(COMMIT)
        .arg(1)
        .arg(keys.epoch())
        .arg(token)
        .query_async(conn)
        .await?;
    Ok(committed == 1)
}

/// Readiness of a reader that asks Redis per request: Redis answers and holds a complete epoch.
pub struct EpochCheck {
    /// The pool.
    pub redis: RedisPool,
    /// The key names.
    pub keys: RedisKeys,
}

impl ReadinessCheck for EpochCheck {
    fn name(&self) -> &'static str {
        "revocation_state"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.redis.get().await.map_err(|error| error.to_string())?;
            match read(&mut *conn, &self.keys)
                .await
                .map_err(|error| error.to_string())?
            {
                Epoch::Complete(_) => Ok(()),
                Epoch::Restoring(_) => Err("the auth server is restoring the revocations".to_owned()),
                Epoch::Missing => Err("Redis holds no revocation state (lost, not restored yet)".to_owned()),
            }
        })
    }
}
