//! The one HTTP client of the verifier (key fetches and the proxy): HTTP/1.1 with pooled
//! keep-alive connections, over TLS for `https://` URLs.

use std::io;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// A request or response body as the client streams it.
pub type StreamBody = BoxBody<Bytes, io::Error>;

/// The pooled client.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, StreamBody>;

/// The roots `https://` servers are verified against: the CA certificates in `ca` (PEM), or the
/// system's when none is given (none at all in a distroless image: then only `ca` works).
pub fn tls_config(ca: Option<&Path>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .with_context(|| format!("cannot read CA certificates from {}", path.display()))?;
            anyhow::ensure!(!certificates.is_empty(), "no certificate in {}", path.display());
            for certificate in certificates {
                roots.add(certificate)?;
            }
        }
        None => {
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    Ok(ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A new client verifying `https://` servers against `tls`.
pub fn http_client(tls: ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}
