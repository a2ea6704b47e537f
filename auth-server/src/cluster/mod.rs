//! Running Kubernetes-natively: signing keys kept in a Secret by the elected replica and mirrored
//! to a JWKS ConfigMap, and the sidecar injection webhook.

pub mod key_commands;
pub mod key_manager;
pub mod key_store;
pub mod lease;
pub mod webhook;

use std::time::Duration;

use auth_core::settings::SettingsError;
use auth_core::shutdown::Shutdown;
use serde::Deserialize;

use crate::keys::SharedKeys;
use crate::keys::rotation::RotationPolicy;
use key_manager::{KeyManager, follow_secret};
use key_store::KeyStore;
use lease::{Elector, Leadership, LeaseSettings};

/// `AUTH_KUBERNETES__*`: off unless `enabled`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct KubernetesSettings {
    /// Keep the signing keys in Kubernetes (instead of `AUTH_KEYS_DIR`).
    pub enabled: bool,
    /// The namespace of the Secret, ConfigMap and Lease (default: the pod's own).
    pub namespace: Option<String>,
    /// This replica's name in the election (default: `$HOSTNAME`, the pod name).
    pub identity: Option<String>,
    /// The Secret holding the private keys and their schedule.
    pub keys_secret: String,
    /// The ConfigMap the public keys are mirrored to (`jwks.json`).
    pub jwks_config_map: String,
    /// The Lease of the election.
    pub lease: String,
    /// How long a leader's term lasts without renewal.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Duration,
    /// A leader unable to renew for this long stops leading.
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Duration,
    /// How often the Lease is renewed or tried.
    #[serde(with = "humantime_serde")]
    pub retry_period: Duration,
    /// A new key starts after the active key has signed this long.
    #[serde(with = "humantime_serde")]
    pub rotation_interval: Duration,
    /// A new key is published this long before it signs: longer than the sidecars' key refresh
    /// and a mounted ConfigMap's update (the kubelet's sync period plus its cache, a minute or
    /// more).
    #[serde(with = "humantime_serde")]
    pub propagation_delay: Duration,
    /// The algorithm of new keys.
    pub key_algorithm: String,
    /// The sidecar injection webhook.
    pub webhook: webhook::WebhookSettings,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace: None,
            identity: None,
            keys_secret: "auth-platform-signing-keys".to_owned(),
            jwks_config_map: "auth-platform-jwks".to_owned(),
            lease: "auth-platform-leader".to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            rotation_interval: Duration::from_secs(30 * 86_400),
            propagation_delay: Duration::from_secs(600),
            key_algorithm: "RS256".to_owned(),
            webhook: webhook::WebhookSettings::default(),
        }
    }
}

impl KubernetesSettings {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !(self.retry_period < self.renew_deadline && self.renew_deadline < self.lease_duration) {
            return Err(SettingsError::new(
                "AUTH_KUBERNETES__RENEW_DEADLINE",
                "must lie between AUTH_KUBERNETES__RETRY_PERIOD and AUTH_KUBERNETES__LEASE_DURATION",
            ));
        }
        if self.propagation_delay >= self.rotation_interval {
            return Err(SettingsError::new(
                "AUTH_KUBERNETES__PROPAGATION_DELAY",
                "must be shorter than AUTH_KUBERNETES__ROTATION_INTERVAL",
            ));
        }
        crate::keys::parse_algorithm(&self.key_algorithm)
            .map_err(|problem| SettingsError::new("AUTH_KUBERNETES__KEY_ALGORITHM", problem))?;
        self.webhook.validate()
    }

    /// The rotation schedule, for tokens that live `token_lifetime` (plus the leeway).
    pub fn policy(&self, token_lifetime: Duration) -> RotationPolicy {
        RotationPolicy {
            interval: self.rotation_interval,
            propagation: self.propagation_delay,
            token_lifetime,
            algorithm: crate::keys::parse_algorithm(&self.key_algorithm)
                .unwrap_or(jsonwebtoken::Algorithm::RS256),
        }
    }

    /// A client for the cluster we run in (or the kubeconfig's), and the namespace to use.
    pub async fn client(&self) -> anyhow::Result<(kube::Client, String)> {
        let client = kube::Client::try_default()
            .await
            .map_err(|error| anyhow::anyhow!("cannot reach the Kubernetes API: {error}"))?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        Ok((client, namespace))
    }

    /// The key Secret and JWKS ConfigMap in `namespace`.
    pub fn key_store(&self, client: kube::Client, namespace: &str) -> KeyStore {
        KeyStore::new(client, namespace, &self.keys_secret, &self.jwks_config_map)
    }

    fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("auth-server-{}", uuid::Uuid::new_v4()))
    }
}

/// Kubernetes mode's metrics.
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 while this replica leads.
    pub leader: prometheus::IntGauge,
    /// Changes this replica made to the key schedule, by kind.
    pub key_changes: prometheus::IntCounterVec,
    /// Admission reviews answered, by outcome (`injected`, `skipped`, `refused`, `invalid`).
    pub admission_reviews: prometheus::IntCounterVec,
}

impl ClusterMetrics {
    /// Registers every metric, each labelled series at zero from the start.
    pub fn register(registry: &prometheus::Registry) -> prometheus::Result<Self> {
        let leader = prometheus::IntGauge::new(
            "kubernetes_leader",
            "1 while this replica keeps the signing key schedule",
        )?;
        registry.register(Box::new(leader.clone()))?;
        let labelled = |name: &str,
                        help: &str,
                        label: &str,
                        known: &[&str]|
         -> prometheus::Result<prometheus::IntCounterVec> {
            let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &[label])?;
            registry.register(Box::new(counter.clone()))?;
            for value in known {
                counter.with_label_values(&[value]);
            }
            Ok(counter)
        };
        Ok(Self {
            leader,
            key_changes: labelled(
                "signing_key_changes_total",
                "Changes made to the signing key schedule by kind",
                "change",
                &["created", "published", "activated", "deleted", "revoked"],
            )?,
            admission_reviews: labelled(
                "admission_reviews_total",
                "Sidecar injection reviews answered by outcome",
                "outcome",
                &["injected", "skipped", "refused", "invalid"],
            )?,
        })
    }
}

/// What Kubernetes mode runs: the election and the key schedule.
pub struct Cluster {
    /// The API client.
    pub client: kube::Client,
    /// The namespace.
    pub namespace: String,
    /// Whether this replica leads.
    pub leadership: Leadership,
    /// Its metrics.
    pub metrics: ClusterMetrics,
}

/// Starts the election, the key Secret's watch and the key schedule, and returns the keys once
/// the Secret has been read (the leader creates it on a first start).
pub async fn start(
    settings: &KubernetesSettings,
    token_lifetime: Duration,
    metrics: ClusterMetrics,
    shutdown: Shutdown,
) -> anyhow::Result<(Cluster, SharedKeys)> {
    let (client, namespace) = settings.client().await?;
    let leases = kube::Api::namespaced(client.clone(), &namespace);
    let lease = LeaseSettings {
        name: settings.lease.clone(),
        identity: settings.identity(),
        duration: settings.lease_duration,
        renew_deadline: settings.renew_deadline,
        retry_period: settings.retry_period,
    };
    let leadership = Elector::new(leases, lease).spawn(shutdown.clone());
    let (mut following, gauge) = (leadership.clone(), metrics.leader.clone());
    tokio::spawn(async move {
        loop {
            gauge.set(i64::from(following.is_leader()));
            if !following.changed().await {
                gauge.set(0);
                return;
            }
        }
    });
    let store = settings.key_store(client.clone(), &namespace);
    let (seen, first_keys) = follow_secret(&store, shutdown.clone());
    // The manager runs while we wait: on a first start the leader writes the first key.
    KeyManager {
        store,
        policy: settings.policy(token_lifetime),
        leadership: leadership.clone(),
        seen,
        changes: metrics.key_changes.clone(),
    }
    .spawn(shutdown.clone());
    let keys = first_keys
        .await
        .map_err(|_| anyhow::anyhow!("stopped before the signing keys were loaded"))?;
    Ok((
        Cluster {
            client,
            namespace,
            leadership,
            metrics,
        },
        keys,
    ))
}

/// Whether an API error is a lost race (409 Conflict).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
