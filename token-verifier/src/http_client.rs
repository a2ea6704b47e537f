//! The one HTTP client of the verifier (key fetches and the proxy): plain HTTP/1.1 with pooled
//! keep-alive connections.

use std::io;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A request or response body as the client streams it.
pub type StreamBody = BoxBody<Bytes, io::Error>;

/// The pooled client.
pub type HttpClient = Client<HttpConnector, StreamBody>;

/// A new client.
pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}
