//! Certificates for servers the tests run with TLS on: a CA, a serving certificate for
//! `127.0.0.1` and `localhost`, a client certificate from the same CA, and an unrelated CA.

use std::path::{Path, PathBuf};

use auth_core::server::{ConnectionLimits, ListenerMetrics, TlsAcceptor};
use auth_server::cluster::webhook::certificate::{ServingCertificate, issue};

/// PEM files in a temporary directory, readable by the `postgres` user.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A fresh CA with its certificates.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("auth-platform-pki-")
            .tempdir()
            .expect("a temporary directory can be created");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX));
        let names = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        let server = issue(&names, None, now).expect("a CA and a certificate");
        let text = |name: &str| String::from_utf8(server.data[name].0.clone()).expect("PEM is text");
        let (ca_key, ca_cert) = (text("ca.key"), text("ca.crt"));
        let client =
            issue(&["client".to_owned()], Some((&ca_key, &ca_cert)), now).expect("a client certificate");
        let other = issue(&names, None, now).expect("another CA");
        let files = [
            ("ca.pem", &server.data["ca.crt"]),
            ("server.pem", &server.data["tls.crt"]),
            ("server.key", &server.data["tls.key"]),
            ("client.pem", &client.data["tls.crt"]),
            ("client.key", &client.data["tls.key"]),
            ("other-ca.pem", &other.data["ca.crt"]),
        ];
        for (name, content) in files {
            std::fs::write(dir.path().join(name), &content.0).expect("a PEM file can be written");
        }
        Self { dir }
    }

    /// A file of this PKI: `ca.pem`, `server.pem`, `server.key`, `client.pem`, `client.key` or
    /// `other-ca.pem`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Serves `endpoint` over HTTPS with the server certificate on a free loopback port, until the
    /// test process ends; returns the port.
    pub async fn serve_https(
        &self,
        endpoint: impl poem::IntoEndpoint<Endpoint: 'static> + Send + 'static,
    ) -> u16 {
        let serving = std::sync::Arc::new(ServingCertificate::default());
        let read = |name: &str| std::fs::read(self.file(name)).expect("the PKI's files exist");
        serving
            .install(&read("server.pem"), &read("server.key"))
            .expect("the certificate installs");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(serving);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port");
        let port = listener.local_addr().expect("a bound address").port();
        let registry = prometheus::Registry::new();
        let [metrics] = ListenerMetrics::register(&registry, ["https"]).expect("fresh metrics");
        tokio::spawn(auth_core::server::serve_tls(
            listener,
            TlsAcceptor::from(std::sync::Arc::new(config)),
            endpoint,
            ConnectionLimits::default(),
            metrics,
            std::future::pending(),
            None,
        ));
        port
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
