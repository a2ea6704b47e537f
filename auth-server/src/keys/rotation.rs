//! The rotation schedule of a managed key ring, as pure state transitions: what the elected
//! replica (and `auth-server keys …`) write to the key Secret. Time is passed in, so the schedule
//! is tested without waiting and every replica reading the same state signs with the same key.
//!
//! A key's life: *pending* (published, not signing: the sidecars and mounted ConfigMaps learn it
//! during the propagation delay) → *active* (signs) → *retired* (published until every token it
//! signed has expired, plus the leeway and the propagation delay, as a lagging replica may still
//! have signed with it just after it retired) → deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use super::{KeyError, KeyRing, SigningKey, generate_pem};

/// When keys rotate and how long they stay.
#[derive(Debug, Clone)]
pub struct RotationPolicy {
    /// A new key starts after the active key has signed this long.
    pub interval: Duration,
    /// A new key is published this long before it signs: longer than a sidecar's key refresh and
    /// a mounted ConfigMap's update.
    pub propagation: Duration,
    /// How long a token signed by a key can still be accepted: the access token lifetime plus
    /// the leeway.
    pub token_lifetime: Duration,
    /// The algorithm of new keys.
    pub algorithm: Algorithm,
}

impl RotationPolicy {
    fn secs(duration: Duration) -> i64 {
        i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
    }

    /// How long a retired key stays published.
    fn retention(&self) -> i64 {
        Self::secs(self.token_lifetime).saturating_add(Self::secs(self.propagation))
    }
}

/// What the ring records about one key (its PEM is stored beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key's id.
    pub kid: String,
    /// When it was created (Unix seconds).
    pub created: i64,
    /// From when it may sign.
    pub signs_from: i64,
    /// When it stopped signing, once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
}

/// One key of the ring: its schedule and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// The schedule.
    pub record: KeyRecord,
    /// The PKCS#8 PEM private key.
    pub pem: String,
}

/// The whole managed ring, as kept in the key Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedRing {
    /// The name of the signing key.
    pub active: String,
    /// Every key by name; names sort by creation.
    pub keys: BTreeMap<String, StoredKey>,
}

/// What changed, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A first key, signing at once.
    Created(String),
    /// A new key published, signing from the given instant.
    Published(String, i64),
    /// A pending key started signing.
    Activated(String),
    /// A retired key's tokens have all expired: it is gone.
    Deleted(String),
    /// A key was revoked as compromised.
    Revoked(String),
}

impl Change {
    /// The change's kind, as a metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Change::Created(_) => "created",
            Change::Published(..) => "published",
            Change::Activated(_) => "activated",
            Change::Deleted(_) => "deleted",
            Change::Revoked(_) => "revoked",
        }
    }
}

fn new_key(policy: &RotationPolicy, now: i64, signs_from: i64) -> Result<(String, StoredKey), KeyError> {
    let pem = generate_pem(policy.algorithm)?;
    let key = SigningKey::from_pem("new", pem.as_bytes())?;
    let stamp = time::OffsetDateTime::from_unix_timestamp(now)
        .ok()
        .and_then(|at| {
            at.format(&time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| now.to_string());
    // The kid in the name keeps two keys made in the same second apart.
    let name = format!("{stamp}-{}", &key.kid[..8]);
    let record = KeyRecord {
        kid: key.kid,
        created: now,
        signs_from,
        retired_at: None,
    };
    Ok((name, StoredKey { record, pem }))
}

impl ManagedRing {
    /// A ring of one new key that signs at once (nothing was signed before it).
    pub fn first(policy: &RotationPolicy, now: i64) -> Result<(Self, Change), KeyError> {
        let (name, key) = new_key(policy, now, now)?;
        let ring = Self {
            active: name.clone(),
            keys: BTreeMap::from([(name.clone(), key)]),
        };
        Ok((ring, Change::Created(name)))
    }

    fn pending(&self) -> impl DoubleEndedIterator<Item = (&String, &StoredKey)> {
        self.keys
            .iter()
            .filter(|(name, key)| **name != self.active && key.record.retired_at.is_none())
    }

    /// Publishes a new key that signs after the propagation delay, unless one is already
    /// pending (a second rotation request, or a new leader resuming one, adds nothing).
    pub fn rotate(&mut self, policy: &RotationPolicy, now: i64) -> Result<Option<Change>, KeyError> {
        if self.pending().next().is_some() {
            return Ok(None);
        }
        let signs_from = now.saturating_add(RotationPolicy::secs(policy.propagation));
        let (name, key) = new_key(policy, now, signs_from)?;
        self.keys.insert(name.clone(), key);
        Ok(Some(Change::Published(name, signs_from)))
    }

    /// Brings the ring up to date at `now`: a due pending key signs (the one it replaces
    /// retires), a rotation starts when the active key is old enough, and retired keys whose
    /// tokens have all expired are deleted.
    pub fn advance(&mut self, policy: &RotationPolicy, now: i64) -> Result<Vec<Change>, KeyError> {
        let mut changes = Vec::new();
        let due = self
            .pending()
            .filter(|(_, key)| key.record.signs_from <= now)
            .map(|(name, _)| name.clone())
            .next_back();
        if let Some(name) = due {
            self.activate(&name, now);
            changes.push(Change::Activated(name));
        }
        let active_since = self
            .keys
            .get(&self.active)
            .map_or(now, |key| key.record.signs_from);
        if now.saturating_sub(active_since) >= RotationPolicy::secs(policy.interval) {
            changes.extend(self.rotate(policy, now)?);
        }
        let expired: Vec<String> = self
            .keys
            .iter()
            .filter(|(_, key)| {
                key.record
                    .retired_at
                    .is_some_and(|at| now >= at.saturating_add(policy.retention()))
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in expired {
            self.keys.remove(&name);
            changes.push(Change::Deleted(name));
        }
        Ok(changes)
    }

    fn activate(&mut self, name: &str, now: i64) {
        if let Some(previous) = self.keys.get_mut(&self.active) {
            previous.record.retired_at.get_or_insert(now);
        }
        if let Some(next) = self.keys.get_mut(name) {
            next.record.signs_from = next.record.signs_from.min(now);
        }
        self.active = name.to_owned();
    }

    /// Removes a compromised key at once. If it was signing, the newest pending key (or else a
    /// new one) signs immediately: tokens signed by the compromised key must stop, and sidecars
    /// fetch a key they do not know on first sight.
    pub fn revoke(&mut self, kid: &str, policy: &RotationPolicy, now: i64) -> Result<Vec<Change>, KeyError> {
        let Some(name) = self
            .keys
            .iter()
            .find(|(_, key)| key.record.kid == kid)
            .map(|(name, _)| name.clone())
        else {
            return Err(KeyError(format!("no key with kid {kid} in the ring")));
        };
        let mut changes = Vec::new();
        if name == self.active {
            let pending = self.pending().map(|(name, _)| name.clone()).next_back();
            let replacement = match pending {
                Some(pending) => pending,
                None => {
                    let (fresh, key) = new_key(policy, now, now)?;
                    self.keys.insert(fresh.clone(), key);
                    fresh
                }
            };
            self.activate(&replacement, now);
            changes.push(Change::Activated(replacement));
        }
        self.keys.remove(&name);
        changes.push(Change::Revoked(name));
        Ok(changes)
    }

    /// The earliest instant at which [`Self::advance`] will change something.
    pub fn next_change(&self, policy: &RotationPolicy) -> Option<i64> {
        let activation = self.pending().map(|(_, key)| key.record.signs_from).min();
        let rotation = match activation {
            Some(_) => None,
            None => self.keys.get(&self.active).map(|key| {
                key.record
                    .signs_from
                    .saturating_add(RotationPolicy::secs(policy.interval))
            }),
        };
        let deletion = self
            .keys
            .values()
            .filter_map(|key| key.record.retired_at)
            .map(|at| at.saturating_add(policy.retention()))
            .min();
        [activation, rotation, deletion].into_iter().flatten().min()
    }

    /// The ring the server signs with: every key published, the active one signing.
    pub fn key_ring(&self) -> Result<KeyRing, KeyError> {
        let keys = self
            .keys
            .iter()
            .map(|(name, key)| SigningKey::from_pem(name, key.pem.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::new(keys, Some(&self.active))
    }

    /// The public keys, as the JWKS ConfigMap publishes them.
    pub fn jwks(&self) -> Result<JwkSet, KeyError> {
        Ok(self.key_ring()?.jwks().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RotationPolicy {
        RotationPolicy {
            interval: Duration::from_secs(1000),
            propagation: Duration::from_secs(100),
            token_lifetime: Duration::from_secs(50),
            algorithm: Algorithm::EdDSA,
        }
    }

    fn signing_kid(ring: &ManagedRing) -> String {
        ring.key_ring().unwrap().signing_key().kid.clone()
    }

    #[test]
    fn a_rotation_publishes_first_signs_after_the_delay_and_deletes_after_the_last_token() {
        let policy = policy();
        let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
        let first = signing_kid(&ring);
        assert!(ring.advance(&policy, 999).unwrap().is_empty());
        let changes = ring.advance(&policy, 1000).unwrap();
        assert!(
            matches!(&changes[..], [Change::Published(_, 1100)]),
            "{changes:?}"
        );
        // Published, not signing.
        assert_eq!(ring.keys.len(), 2);
        assert_eq!(signing_kid(&ring), first);
        assert_eq!(ring.next_change(&policy), Some(1100));
        assert!(ring.advance(&policy, 1099).unwrap().is_empty());
        let changes = ring.advance(&policy, 1100).unwrap();
        assert!(matches!(&changes[..], [Change::Activated(_)]), "{changes:?}");
        assert_ne!(signing_kid(&ring), first);
        // The retired key stays for the token lifetime plus the propagation delay.
        assert_eq!(ring.next_change(&policy), Some(1250));
        assert!(ring.advance(&policy, 1249).unwrap().is_empty());
        assert_eq!(ring.key_ring().unwrap().jwks().keys.len(), 2);
        let changes = ring.advance(&policy, 1250).unwrap();
        assert!(matches!(&changes[..], [Change::Deleted(_)]), "{changes:?}");
        assert_eq!(ring.keys.len(), 1);
    }

    #[test]
    fn a_second_rotation_request_adds_no_second_key() {
        let policy = policy();
        let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
        assert!(ring.rotate(&policy, 10).unwrap().is_some());
        assert!(ring.rotate(&policy, 11).unwrap().is_none());
        assert!(ring.advance(&policy, 20).unwrap().is_empty());
        assert_eq!(ring.keys.len(), 2);
    }

    #[test]
    fn revoking_the_active_key_promotes_the_pending_one_at_once() {
        let policy = policy();
        let (mut ring, _) = ManagedRing::first(&policy, 0).unwrap();
        let compromised = signing_kid(&ring);
        ring.rotate(&policy, 10).unwrap();
        let changes = ring.revoke(&compromised, &policy, 20).unwrap();
        assert!(
            matches!(&changes[..], [Change::Activated(_), Change::Revoked(_)]),
            "{changes:?}"
        );
        assert_eq!(ring.keys.len(), 1);
        assert_ne!(signing_kid(&ring), compromised);
        let jwks = ring.jwks().unwrap();
        assert!(jwks.find(&compromised).is_none());
        // Alone in the ring, a fresh key replaces a revoked active key.
        let only = signing_kid(&ring);
        ring.revoke(&only, &policy, 30).unwrap();
        assert_eq!(ring.keys.len(), 1);
        assert_ne!(signing_kid(&ring), only);
        assert!(ring.revoke("unknown", &policy, 40).is_err());
    }
}
