//! TLS client configuration shared by every outgoing connection (Redis, HTTPS key fetches, the
//! proxied upstream): the roots a server's certificate must chain to, and an optional client
//! certificate.

use std::path::Path;

use anyhow::Context;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// A client configuration trusting the CA certificates in `ca` (PEM), or the system's roots when
/// none is given (none at all in a distroless image: then only `ca` works), and presenting the
/// certificate and key of `identity` when the server asks for one.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> anyhow::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certificates = certificates(path)?;
            anyhow::ensure!(!certificates.is_empty(), "no certificate in {}", path.display());
            for certificate in certificates {
                roots.add(certificate)?;
            }
        }
        None => {
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let builder = ClientConfig::builder().with_root_certificates(roots);
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some((certificate, key)) => {
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("cannot read a private key from {}", key.display()))?;
            builder.with_client_auth_cert(certificates(certificate)?, key)?
        }
    })
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("cannot read certificates from {}", path.display()))
}
