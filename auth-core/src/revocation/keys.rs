//! The Redis key scheme: `{namespace}:{resource}:{identifier}`.

use uuid::Uuid;

use super::RevocationKind;

/// Builds every Redis key of the platform under one namespace (`auth` by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    namespace: String,
}

impl Default for RedisKeys {
    fn default() -> Self {
        Self::new("auth")
    }
}

impl RedisKeys {
    /// Keys under `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
        }
    }

    /// `{ns}:revoked:{kind}:{id}`: present while the revocation matters.
    pub fn revoked(&self, kind: RevocationKind, id: &str) -> String {
        format!("{}:revoked:{}:{id}", self.namespace, kind.as_str())
    }

    /// `{ns}:session:{sid}`: the session mirror.
    pub fn session(&self, sid: Uuid) -> String {
        format!("{}:session:{sid}", self.namespace)
    }

    /// `{ns}:ratelimit:{<scope>:<id>}`: a rate-limit counter (the window is appended by the
    /// limiter). The braces are a Redis Cluster hash tag: the windows of one counter, read and
    /// written in one transaction, share a hash slot.
    pub fn rate_limit(&self, scope: &str, id: &str) -> String {
        format!("{}:ratelimit:{{{scope}:{id}}}", self.namespace)
    }

    /// `{ns}:revocations`: the stream every revocation is appended to.
    pub fn stream(&self) -> String {
        format!("{}:revocations", self.namespace)
    }

    /// `{ns}:revocations:epoch`: present while Redis holds every revocation (see `epoch`).
    pub fn epoch(&self) -> String {
        format!("{}:revocations:epoch", self.namespace)
    }

    /// `{ns}:revocations:snapshot`: the compact snapshot sidecars start from (see `snapshot`).
    pub fn snapshot(&self) -> String {
        format!("{}:revocations:snapshot", self.namespace)
    }

    /// `{ns}:revocations:snapshot:lease`: held by the replica writing the snapshot.
    pub fn snapshot_lease(&self) -> String {
        format!("{}:revocations:snapshot:lease", self.namespace)
    }

    /// `{ns}:revocations:resync`: a lease held by the replica running the periodic re-check.
    pub fn resync_lease(&self) -> String {
        format!("{}:revocations:resync", self.namespace)
    }
}
