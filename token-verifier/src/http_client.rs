//! The one HTTP client of the verifier (key fetches and the proxy): HTTP/1.1 with pooled
//! keep-alive connections, over TLS for `https://` URLs.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;
use std::io;

/// A request or response body as the client streams it.
pub type StreamBody = BoxBody<Bytes, io::Error>;

/// The pooled client.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, StreamBody>;

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
