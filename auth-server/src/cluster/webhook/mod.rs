//! The sidecar injection webhook: a mutating admission webhook on its own TLS port.

pub mod certificate;
pub mod inject;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use auth_core::listener::BoundListener;
use auth_core::server::{ConnectionLimits, ListenerMetrics, TlsAcceptor};
use auth_core::settings::SettingsError;
use auth_core::shutdown::Shutdown;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{EndpointExt, Response, Route, handler, post};
use serde::Deserialize;

use super::Cluster;
use certificate::{CHECK_EVERY, CertificateManager, ServingCertificate};
use inject::{Injector, Scope, SidecarTemplate};

/// The largest AdmissionReview read (a pod object is at most about 1.5 MiB in etcd).
const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Who writes the webhook's TLS Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateSource {
    /// The elected replica (a CA of its own, written into the configuration's `caBundle`).
    SelfManaged,
    /// Someone else, such as cert-manager (`cert-manager.io/inject-ca-from` sets the bundle).
    External,
}

/// `AUTH_KUBERNETES__WEBHOOK__*`: off unless `listen` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookSettings {
    /// Where the webhook listens (TLS), e.g. `0.0.0.0:8443`.
    pub listen: Option<String>,
    /// The sidecar template (JSON: `container` and `volumes`), as the chart renders it.
    pub sidecar_template: Option<PathBuf>,
    /// Inject native sidecars (init containers with `restartPolicy: Always`, Kubernetes 1.29+).
    pub native_sidecars: bool,
    /// The Secret holding `tls.crt`, `tls.key` and `ca.crt`.
    pub tls_secret: String,
    /// Who writes that Secret.
    pub certificate: CertificateSource,
    /// The MutatingWebhookConfiguration whose `caBundle` a self-managed CA is written into.
    pub configuration: String,
    /// The webhook's Service (the certificate is for `<service>.<namespace>.svc`).
    pub service: String,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            listen: None,
            sidecar_template: None,
            native_sidecars: true,
            tls_secret: "auth-platform-webhook-tls".to_owned(),
            certificate: CertificateSource::SelfManaged,
            configuration: "auth-platform-injector".to_owned(),
            service: "auth-platform-webhook".to_owned(),
        }
    }
}

impl WebhookSettings {
    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let Some(listen) = &self.listen else {
            return Ok(());
        };
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(SettingsError::new(
                "AUTH_KUBERNETES__WEBHOOK__LISTEN",
                "expected an address like 0.0.0.0:8443",
            ));
        }
        if self.sidecar_template.is_none() {
            return Err(SettingsError::new(
                "AUTH_KUBERNETES__WEBHOOK__SIDECAR_TEMPLATE",
                "is required with AUTH_KUBERNETES__WEBHOOK__LISTEN",
            ));
        }
        Ok(())
    }

    /// The injector, with the template read.
    pub fn injector(&self) -> anyhow::Result<Injector> {
        let path = self
            .sidecar_template
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no sidecar template"))?;
        let text = std::fs::read(path).map_err(|error| {
            anyhow::anyhow!("cannot read the sidecar template {}: {error}", path.display())
        })?;
        let template: SidecarTemplate = serde_json::from_slice(&text)
            .map_err(|error| anyhow::anyhow!("the sidecar template {}: {error}", path.display()))?;
        Ok(Injector {
            template,
            native_sidecars: self.native_sidecars,
        })
    }
}

/// How a review was answered, as a metric label.
fn outcome(response: Option<&kube::core::admission::AdmissionResponse>) -> &'static str {
    match response {
        Some(response) if response.patch.is_some() => "injected",
        Some(response) if response.allowed => "skipped",
        Some(response) if !response.uid.is_empty() => "refused",
        _ => "invalid",
    }
}

#[handler]
async fn review(
    body: poem::Body,
    injector: Data<&Arc<Injector>>,
    scope: Data<&Scope>,
    reviews: Data<&prometheus::IntCounterVec>,
) -> Response {
    let Ok(bytes) = body.into_bytes_limit(MAX_REVIEW_BYTES).await else {
        return Response::builder()
            .status(StatusCode::PAYLOAD_TOO_LARGE)
            .body("the review is too large or unreadable");
    };
    let answer = injector.review(&bytes, **scope);
    reviews
        .with_label_values(&[outcome(answer.response.as_ref())])
        .inc();
    match serde_json::to_vec(&answer) {
        Ok(json) => Response::builder().content_type("application/json").body(json),
        Err(_) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .finish(),
    }
}

/// The webhook's routes: one per scope of the configuration's two webhooks.
pub fn routes(injector: Injector, reviews: prometheus::IntCounterVec) -> impl poem::Endpoint {
    let injector = Arc::new(injector);
    Route::new()
        .at(
            "/inject/annotated",
            post(review).data(Scope::Annotated).data(injector.clone()),
        )
        .at(
            "/inject/namespace",
            post(review).data(Scope::Namespace).data(injector),
        )
        .data(reviews)
}

/// Serves the webhook until shutdown; while this replica leads and the certificate is
/// self-managed, keeps it.
pub async fn serve(
    settings: &WebhookSettings,
    listener: BoundListener,
    cluster: &Cluster,
    (limits, metrics): (ConnectionLimits, ListenerMetrics),
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let injector = settings.injector()?;
    let serving = Arc::new(ServingCertificate::default());
    let secrets = kube::Api::namespaced(cluster.client.clone(), &cluster.namespace);
    certificate::follow(
        secrets.clone(),
        &settings.tls_secret,
        serving.clone(),
        shutdown.clone(),
    );
    if settings.certificate == CertificateSource::SelfManaged {
        let manager = CertificateManager {
            secrets,
            secret: settings.tls_secret.clone(),
            dns_names: dns_names(&settings.service, &cluster.namespace),
            configurations: kube::Api::all(cluster.client.clone()),
            configuration: settings.configuration.clone(),
        };
        let mut leadership = cluster.leadership.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            while leadership.until_leader(&shutdown).await {
                let pass = manager.reconcile(auth_core::revocation::unix_now());
                let Some(outcome) = leadership.while_leader(pass).await else {
                    continue;
                };
                let pause = match outcome {
                    Ok(()) => CHECK_EVERY,
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "keeping the webhook certificate failed; retrying"
                        );
                        Duration::from_secs(5)
                    }
                };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = leadership.changed() => {}
                    () = shutdown.clone().wait() => return,
                }
            }
        });
    }
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(serving);
    tracing::info!(listen = %listener.local_addr, "sidecar injection webhook started");
    auth_core::server::serve_tls(
        listener.listener,
        TlsAcceptor::from(Arc::new(config)),
        routes(injector, cluster.metrics.admission_reviews.clone()),
        limits,
        metrics,
        shutdown.wait(),
        None,
    )
    .await?;
    Ok(())
}

/// The names the API server may call the webhook Service by.
pub fn dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
        format!("{service}.{namespace}"),
        service.to_owned(),
    ]
}
