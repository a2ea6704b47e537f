//! `auth-server keys status | rotate | revoke KID`: the operator's handles on the managed ring.
//! They change the key Secret the same way the leader does (read-modify-write, retried on a
//! lost race) and mirror the public keys to the ConfigMap at once, so they work even when no
//! replica is running; the replicas follow the Secret by themselves.

use std::fmt::Write as _;

use anyhow::Context;
use auth_core::revocation::{RedisKeys, unix_now};

use super::key_store::KeyStore;
use crate::keys::rotation::{Change, ManagedRing, RotationPolicy};
use crate::service::revoker::Revoker;
use crate::settings::Settings;

/// One line per key: name, kid, state.
pub fn describe(ring: &ManagedRing, policy: &RotationPolicy, now: i64) -> String {
    let mut text = String::new();
    for (name, key) in &ring.keys {
        let record = &key.record;
        let state = match (name == &ring.active, record.retired_at) {
            (true, _) => "active".to_owned(),
            (false, Some(at)) => format!("retired {}s ago", now - at),
            (false, None) => format!("pending, signs in {}s", (record.signs_from - now).max(0)),
        };
        let _ = writeln!(text, "{name}\t{}\t{state}", record.kid);
    }
    if let Some(at) = ring.next_change(policy) {
        let _ = writeln!(text, "next scheduled change in {}s", (at - now).max(0));
    }
    text
}

async fn store(settings: &Settings) -> anyhow::Result<KeyStore> {
    let (client, namespace) = settings.kubernetes.client().await?;
    Ok(settings.kubernetes.key_store(client, &namespace))
}

/// Applies a change to the stored ring and mirrors the result to the ConfigMap.
async fn change(
    store: &KeyStore,
    mut edit: impl FnMut(ManagedRing) -> Result<Option<(ManagedRing, Vec<Change>)>, crate::keys::KeyError> + Send,
) -> anyhow::Result<Vec<Change>> {
    let mut edit = |ring: Option<ManagedRing>| match ring {
        Some(ring) => edit(ring),
        None => Err(crate::keys::KeyError(
            "there is no key Secret yet: start the server first".to_owned(),
        )),
    };
    let (ring, changes) = store.update(&mut edit).await?;
    if let Some(ring) = ring {
        store.publish_jwks(&ring).await?;
    }
    Ok(changes)
}

/// Prints the ring.
pub async fn status(settings: &Settings) -> anyhow::Result<String> {
    let store = store(settings).await?;
    let (ring, _) = store.update(&mut |_| Ok(None)).await?;
    let ring = ring.context("there is no key Secret yet")?;
    Ok(describe(
        &ring,
        &settings.kubernetes.policy(settings.revocation_retention()),
        unix_now(),
    ))
}

/// Publishes a new key that signs after the propagation delay (nothing if one is pending).
pub async fn rotate(settings: &Settings) -> anyhow::Result<String> {
    let policy = settings.kubernetes.policy(settings.revocation_retention());
    let now = unix_now();
    let changes = change(&store(settings).await?, |mut ring| {
        Ok(ring.rotate(&policy, now)?.map(|change| (ring, vec![change])))
    })
    .await?;
    Ok(match changes.first() {
        Some(Change::Published(name, at)) => format!("published {name}; it signs in {}s", at - now),
        _ => "a new key is already pending; nothing to do".to_owned(),
    })
}

/// Revokes a compromised key: every token it signed is rejected from now on (durably, then in
/// Redis for every sidecar), and it leaves the ring and the JWKS at once.
pub async fn revoke(settings: &Settings, kid: &str) -> anyhow::Result<String> {
    let db = crate::database::pool(settings.database_options()?, 2, settings.dependency_timeout);
    let redis = auth_core::redis::pool(&settings.redis_source()?, 2, settings.dependency_timeout)?;
    let published = prometheus::IntCounterVec::new(prometheus::Opts::new("unused", "unused"), &["kind"])?;
    let waits = prometheus::IntCounterVec::new(prometheus::Opts::new("unused", "unused"), &["outcome"])?;
    let revoker = Revoker::new(
        db.clone(),
        redis,
        RedisKeys::new(&settings.redis_namespace),
        (settings.access_token_ttl, settings.token_leeway),
        published,
        settings.replica_acks(waits),
    );
    let mut revocation = revoker.key(kid);
    let mut transaction = db.begin().await.context("PostgreSQL")?;
    revoker
        .record(
            &mut transaction,
            std::slice::from_mut(&mut revocation),
            "key_compromised",
        )
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    transaction.commit().await.context("PostgreSQL")?;
    let published = match revoker.publish(std::slice::from_ref(&revocation)).await {
        Ok(()) => "published to Redis",
        Err(_) => "NOT yet in Redis (the servers' resync publishes it within a minute)",
    };
    let policy = settings.kubernetes.policy(settings.revocation_retention());
    let now = unix_now();
    let changes = change(&store(settings).await?, |mut ring| {
        let changes = ring.revoke(kid, &policy, now)?;
        Ok(Some((ring, changes)))
    })
    .await?;
    Ok(format!(
        "revoked {kid}: recorded, {published}; ring changes: {changes:?}"
    ))
}
