//! The webhook's TLS without drift: the serving certificate lives in a Secret (`tls.crt`,
//! `tls.key`, `ca.crt`). Either cert-manager writes it, or the elected replica does: it creates a
//! CA and a serving certificate signed by it, renews the certificate (with the same CA) well
//! before it expires, and writes the CA into the MutatingWebhookConfiguration's `caBundle` only
//! when it differs. Nothing is generated at render time, so a GitOps sync never changes it.
//! Every replica watches the Secret and serves the newest certificate without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use auth_core::shutdown::Shutdown;
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::cluster::is_conflict;

/// The CA lives ten years; the serving certificate one year, renewed in its last 30 days.
const CA_DAYS: i64 = 3650;
const SERVING_DAYS: i64 = 365;
const RENEW_BEFORE: i64 = 30 * 86_400;
/// How often the leader looks at the certificate.
pub const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// Annotations recording what the serving certificate was made for.
const NOT_AFTER: &str = "auth-platform.io/not-after";
const DNS_NAMES: &str = "auth-platform.io/dns-names";

/// The certificate being served, swapped whole when the Secret changes.
#[derive(Debug, Default)]
pub struct ServingCertificate(ArcSwapOption<CertifiedKey>);

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load_full()
    }
}

impl ServingCertificate {
    /// Whether a certificate has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.0.load().is_some()
    }

    /// Installs `tls.crt` and `tls.key` (PEM).
    pub fn install(&self, chain: &[u8], key: &[u8]) -> anyhow::Result<()> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_slice_iter(chain).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key)?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)?;
        self.0.store(Some(Arc::new(certified)));
        Ok(())
    }
}

fn entry<'a>(secret: &'a Secret, name: &str) -> Option<&'a [u8]> {
    secret.data.as_ref()?.get(name).map(|bytes| bytes.0.as_slice())
}

/// Watches the TLS Secret and serves what it holds.
pub fn follow(api: Api<Secret>, name: &str, serving: Arc<ServingCertificate>, shutdown: Shutdown) {
    let mut stream = Box::pin(watcher::watch_object(api, name));
    let name = name.to_owned();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = shutdown.clone().wait() => return,
            };
            match event {
                Some(Ok(Some(secret))) => {
                    let installed = match (entry(&secret, "tls.crt"), entry(&secret, "tls.key")) {
                        (Some(chain), Some(key)) => serving.install(chain, key),
                        _ => Err(anyhow::anyhow!("no tls.crt and tls.key")),
                    };
                    match installed {
                        Ok(()) => tracing::info!(secret = %name, "webhook serving certificate loaded"),
                        Err(error) => {
                            tracing::error!(secret = %name, error = format!("{error:#}"), "the webhook TLS Secret is unusable")
                        }
                    }
                }
                Some(Ok(None)) => tracing::warn!(secret = %name, "the webhook TLS Secret is missing"),
                Some(Err(error)) => {
                    tracing::warn!(%error, "watching the webhook TLS Secret failed; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                None => return,
            }
        }
    });
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "auth-platform webhook CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn validity(params: &mut CertificateParams, now: i64, days: i64) {
    let at =
        |secs| time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    // An hour back tolerates an API server whose clock is behind ours.
    params.not_before = at(now - 3600);
    params.not_after = at(now + days * 86_400);
}

/// The TLS Secret's contents.
pub struct Issued {
    /// `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
    pub data: BTreeMap<String, ByteString>,
    /// What the certificate was made for, and until when.
    pub annotations: BTreeMap<String, String>,
}

/// A CA (new, or the one given as its key and certificate PEM) and a serving certificate for
/// `dns_names` signed by it.
pub fn issue(dns_names: &[String], ca: Option<(&str, &str)>, now: i64) -> Result<Issued, rcgen::Error> {
    let (ca_key, ca_pem) = match ca {
        Some((key, certificate)) => (KeyPair::from_pem(key)?, certificate.to_owned()),
        None => {
            let key = KeyPair::generate()?;
            let mut params = ca_params()?;
            validity(&mut params, now, CA_DAYS);
            let certificate = params.self_signed(&key)?;
            (key, certificate.pem())
        }
    };
    let issuer = Issuer::new(ca_params()?, &ca_key);
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, dns_names.first().cloned().unwrap_or_default());
    validity(&mut params, now, SERVING_DAYS);
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer)?;
    let data = BTreeMap::from([
        ("ca.crt".to_owned(), ByteString(ca_pem.into_bytes())),
        (
            "ca.key".to_owned(),
            ByteString(ca_key.serialize_pem().into_bytes()),
        ),
        ("tls.crt".to_owned(), ByteString(certificate.pem().into_bytes())),
        ("tls.key".to_owned(), ByteString(key.serialize_pem().into_bytes())),
    ]);
    let annotations = BTreeMap::from([
        (NOT_AFTER.to_owned(), (now + SERVING_DAYS * 86_400).to_string()),
        (DNS_NAMES.to_owned(), dns_names.join(",")),
    ]);
    Ok(Issued { data, annotations })
}

/// The self-managed certificate's keeper (run by the leader).
pub struct CertificateManager {
    /// Secrets in the platform's namespace.
    pub secrets: Api<Secret>,
    /// The TLS Secret's name.
    pub secret: String,
    /// The names the webhook Service answers to.
    pub dns_names: Vec<String>,
    /// Webhook configurations.
    pub configurations: Api<MutatingWebhookConfiguration>,
    /// The configuration to keep the `caBundle` of.
    pub configuration: String,
}

impl CertificateManager {
    /// Creates or renews the certificate when needed, then makes the configuration trust its CA.
    pub async fn reconcile(&self, now: i64) -> anyhow::Result<()> {
        let ca = loop {
            let stored = self.secrets.get_opt(&self.secret).await?;
            let annotations = stored
                .as_ref()
                .and_then(|secret| secret.metadata.annotations.clone())
                .unwrap_or_default();
            let fresh = annotations
                .get(NOT_AFTER)
                .and_then(|at| at.parse::<i64>().ok())
                .is_some_and(|at| at - RENEW_BEFORE > now)
                && annotations.get(DNS_NAMES) == Some(&self.dns_names.join(","));
            let text = |name| {
                stored
                    .as_ref()
                    .and_then(|secret| entry(secret, name))
                    .and_then(|bytes| std::str::from_utf8(bytes).ok())
            };
            let existing_ca = text("ca.key").zip(text("ca.crt"));
            if fresh && let Some((_, certificate)) = existing_ca {
                break certificate.to_owned();
            }
            let Issued { data, annotations } = issue(&self.dns_names, existing_ca, now)?;
            let ca = String::from_utf8_lossy(&data["ca.crt"].0).into_owned();
            let written = match stored {
                Some(mut secret) => {
                    secret.data = Some(data);
                    secret
                        .metadata
                        .annotations
                        .get_or_insert_with(BTreeMap::new)
                        .extend(annotations);
                    self.secrets
                        .replace(&self.secret, &PostParams::default(), &secret)
                        .await
                }
                None => {
                    let secret = Secret {
                        metadata: ObjectMeta {
                            name: Some(self.secret.clone()),
                            annotations: Some(annotations),
                            ..ObjectMeta::default()
                        },
                        data: Some(data),
                        type_: Some("Opaque".to_owned()),
                        ..Secret::default()
                    };
                    self.secrets.create(&PostParams::default(), &secret).await
                }
            };
            match written {
                Ok(_) => {
                    tracing::info!(secret = %self.secret, "issued the webhook serving certificate");
                    break ca;
                }
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        };
        self.trust(ca.as_bytes()).await
    }

    /// Sets every webhook's `caBundle` in the configuration to `ca`, only where it differs.
    async fn trust(&self, ca: &[u8]) -> anyhow::Result<()> {
        loop {
            let Some(mut configuration) = self.configurations.get_opt(&self.configuration).await? else {
                tracing::warn!(configuration = %self.configuration, "no MutatingWebhookConfiguration to trust the webhook CA in");
                return Ok(());
            };
            let mut changed = false;
            for webhook in configuration.webhooks.iter_mut().flatten() {
                if webhook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .map(|bundle| bundle.0.as_slice())
                    != Some(ca)
                {
                    webhook.client_config.ca_bundle = Some(ByteString(ca.to_vec()));
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
            match self
                .configurations
                .replace(&self.configuration, &PostParams::default(), &configuration)
                .await
            {
                Ok(_) => {
                    tracing::info!(configuration = %self.configuration, "wrote the webhook CA into the caBundle");
                    return Ok(());
                }
                Err(error) if is_conflict(&error) => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}
