//! The key Secret and the JWKS ConfigMap: how a managed ring is stored, read and changed.
//!
//! The Secret holds one `<name>.pem` entry per private key and `ring.json`, the schedule (which
//! key signs, when each was created, may sign and retired). Every change is a read-modify-write
//! carrying the `resourceVersion` it read, so two writers never overwrite each other: the loser
//! gets a 409 and starts again from a fresh read.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;

use super::is_conflict;
use kube::api::PostParams;
use serde::{Deserialize, Serialize};

use crate::keys::KeyError;
use crate::keys::rotation::{Change, KeyRecord, ManagedRing, StoredKey};

/// The schedule's entry in the Secret.
const RING_ENTRY: &str = "ring.json";
/// The JWKS's entry in the ConfigMap (sidecars read `<mount>/jwks.json`).
pub const JWKS_ENTRY: &str = "jwks.json";
/// How often a write is retried after losing a race.
const CONFLICT_RETRIES: usize = 5;

#[derive(Serialize, Deserialize)]
struct RingDocument {
    active: String,
    keys: BTreeMap<String, KeyRecord>,
}

/// Reads a ring from the Secret's data.
pub fn decode(secret: &Secret) -> Result<ManagedRing, KeyError> {
    let data = secret.data.clone().unwrap_or_default();
    let entry = |name: &str| {
        data.get(name)
            .ok_or_else(|| KeyError(format!("the key Secret has no {name}")))
    };
    let document: RingDocument = serde_json::from_slice(&entry(RING_ENTRY)?.0)
        .map_err(|error| KeyError(format!("the key Secret's {RING_ENTRY}: {error}")))?;
    let keys = document
        .keys
        .into_iter()
        .map(|(name, record)| {
            let pem = String::from_utf8(entry(&format!("{name}.pem"))?.0.clone())
                .map_err(|_| KeyError(format!("{name}.pem is not text")))?;
            Ok((name, StoredKey { record, pem }))
        })
        .collect::<Result<_, KeyError>>()?;
    Ok(ManagedRing {
        active: document.active,
        keys,
    })
}

/// Writes a ring as the Secret's data.
pub fn encode(ring: &ManagedRing) -> BTreeMap<String, ByteString> {
    let document = RingDocument {
        active: ring.active.clone(),
        keys: ring
            .keys
            .iter()
            .map(|(name, key)| (name.clone(), key.record.clone()))
            .collect(),
    };
    let mut data: BTreeMap<String, ByteString> = ring
        .keys
        .iter()
        .map(|(name, key)| (format!("{name}.pem"), ByteString(key.pem.clone().into_bytes())))
        .collect();
    let schedule = serde_json::to_vec_pretty(&document).unwrap_or_default();
    data.insert(RING_ENTRY.to_owned(), ByteString(schedule));
    data
}

/// A change to the ring, given the ring as it is now (`None`: there is no Secret). Returns the
/// new ring and what changed, or `None` when there is nothing to do.
pub type Edit<'a> =
    dyn FnMut(Option<ManagedRing>) -> Result<Option<(ManagedRing, Vec<Change>)>, KeyError> + Send + 'a;

/// Failures of the key store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The ring could not be built or changed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The API server refused or could not be reached.
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// Every retry lost a race with another writer.
    #[error("the key Secret kept changing; gave up after {CONFLICT_RETRIES} tries")]
    Contended,
}

/// The named Secret and ConfigMap.
#[derive(Clone)]
pub struct KeyStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret: String,
    config_map: String,
}

impl KeyStore {
    /// The store in the given Secret and ConfigMap.
    pub fn new(client: kube::Client, namespace: &str, secret: &str, config_map: &str) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret: secret.to_owned(),
            config_map: config_map.to_owned(),
        }
    }

    /// The Secret's API, for watching it.
    pub fn secrets(&self) -> (Api<Secret>, &str) {
        (self.secrets.clone(), &self.secret)
    }

    /// Applies `edit` to the ring as stored, retrying from a fresh read when another writer got
    /// there first. Returns the ring as stored afterwards and what changed.
    pub async fn update(
        &self,
        edit: &mut Edit<'_>,
    ) -> Result<(Option<ManagedRing>, Vec<Change>), StoreError> {
        for _ in 0..CONFLICT_RETRIES {
            let stored = self.secrets.get_opt(&self.secret).await?;
            let ring = stored.as_ref().map(decode).transpose()?;
            let Some((next, changes)) = edit(ring.clone())? else {
                return Ok((ring, Vec::new()));
            };
            let written = match stored {
                Some(mut secret) => {
                    secret.data = Some(encode(&next));
                    secret.string_data = None;
                    self.secrets
                        .replace(&self.secret, &PostParams::default(), &secret)
                        .await
                }
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.secret.clone()),
                            labels: Some(BTreeMap::from([(
                                "app.kubernetes.io/managed-by".to_owned(),
                                "auth-server".to_owned(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(encode(&next)),
                        type_: Some("Opaque".to_owned()),
                        ..Secret::default()
                    };
                    self.secrets.create(&PostParams::default(), &secret).await
                }
            };
            match written {
                Ok(_) => return Ok((Some(next), changes)),
                Err(error) if is_conflict(&error) => {
                    tracing::info!("the key Secret changed meanwhile; reading it again");
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contended)
    }

    /// Writes the ring's public keys to the ConfigMap, only when they differ from what it holds.
    /// Returns whether it wrote.
    pub async fn publish_jwks(&self, ring: &ManagedRing) -> Result<bool, StoreError> {
        let jwks = serde_json::to_string(&ring.jwks()?).map_err(|error| KeyError(error.to_string()))?;
        for _ in 0..CONFLICT_RETRIES {
            let stored = self.config_maps.get_opt(&self.config_map).await?;
            let written = match stored {
                Some(map) if map.data.as_ref().and_then(|data| data.get(JWKS_ENTRY)) == Some(&jwks) => {
                    return Ok(false);
                }
                Some(mut map) => {
                    map.data
                        .get_or_insert_with(BTreeMap::new)
                        .insert(JWKS_ENTRY.to_owned(), jwks.clone());
                    self.config_maps
                        .replace(&self.config_map, &PostParams::default(), &map)
                        .await
                }
                None => {
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.config_map.clone()),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(JWKS_ENTRY.to_owned(), jwks.clone())])),
                        ..ConfigMap::default()
                    };
                    self.config_maps.create(&PostParams::default(), &map).await
                }
            };
            match written {
                Ok(_) => return Ok(true),
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(StoreError::Contended)
    }
}
