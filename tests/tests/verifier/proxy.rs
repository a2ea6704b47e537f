//! Reverse-proxy mode in front of a small app.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonwebtoken::Algorithm;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Json;
use poem::{EndpointExt, Request, Route, Server, handler};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::fixture_with;

/// An app that answers with what it received: headers, path and body size.
async fn echo_app() -> (String, Arc<AtomicUsize>) {
    #[handler]
    async fn echo(req: &Request, body: poem::Body, hits: poem::web::Data<&Arc<AtomicUsize>>) -> Json<Value> {
        hits.fetch_add(1, Ordering::Relaxed);
        let headers: serde_json::Map<String, Value> = req
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), json!(value.to_str().unwrap_or_default())))
            .collect();
        let size = body.into_bytes().await.map_or(0, |bytes| bytes.len());
        Json(json!({ "path": req.uri().path(), "headers": headers, "body_size": size }))
    }
    #[handler]
    fn download() -> Vec<u8> {
        vec![b'x'; 3 * 1024 * 1024]
    }
    let hits = Arc::new(AtomicUsize::new(0));
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/download", download)
        .at("/*", echo)
        .data(hits.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn the_app_gets_the_identity_and_never_a_forged_one() {
    let (upstream, hits) = echo_app().await;
    let upstream_for_settings = upstream.clone();
    let fx = fixture_with(Algorithm::RS256, move |s| {
        s.upstream = Some(upstream_for_settings);
        s.public_paths = vec!["/public".into()];
    })
    .await;
    let proxy = &fx.verifier;
    let seen: Value = proxy
        .client
        .post(format!("{}/api/orders?x=1", proxy.url))
        .bearer_auth(&fx.user.access)
        .header("x-auth-user-id", "00000000-0000-0000-0000-000000000000")
        .header("X-Auth-Roles", "admin")
        .header("x-auth-extra", "forged")
        .header("x_auth_user_id", "forged")
        .header("X_Auth_Roles", "admin")
        .header("x-auth_email", "forged@example.com")
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["path"], "/api/orders");
    assert_eq!(seen["body_size"], 5);
    let headers = &seen["headers"];
    assert_eq!(headers["x-auth-user-id"], fx.user.id.as_str());
    assert_eq!(headers["x-auth-roles"], "user");
    let identity: Vec<&String> = headers
        .as_object()
        .unwrap()
        .keys()
        .filter(|name| name.to_lowercase().replace('_', "-").starts_with("x-auth-"))
        .collect();
    assert_eq!(
        identity,
        [
            "x-auth-email",
            "x-auth-roles",
            "x-auth-session-id",
            "x-auth-user-id"
        ],
        "every client spelling of an X-Auth-* header is stripped (CGI reads `_` as `-`)"
    );
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");

    let public: Value = proxy
        .client
        .get(format!("{}/public/page", proxy.url))
        .header("x-auth-user-id", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        public["headers"].get("x-auth-user-id").is_none(),
        "forged identity stripped on public paths too"
    );

    let before = hits.load(Ordering::Relaxed);
    let refused = proxy
        .client
        .get(format!("{}/api/orders", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let refused = proxy
        .client
        .get(format!("{}/api/orders", proxy.url))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        hits.load(Ordering::Relaxed),
        before,
        "refused requests never reach the app"
    );
    drop(upstream);
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (upstream, _) = echo_app().await;
    let fx = fixture_with(Algorithm::RS256, move |s| s.upstream = Some(upstream)).await;
    let upload = vec![b'u'; 5 * 1024 * 1024];
    let seen: Value = fx
        .verifier
        .client
        .put(format!("{}/upload", fx.verifier.url))
        .bearer_auth(&fx.user.access)
        .body(upload)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["body_size"], 5 * 1024 * 1024);
    let download = fx
        .verifier
        .client
        .get(format!("{}/download", fx.verifier.url))
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(download.len(), 3 * 1024 * 1024);
}

#[tokio::test]
async fn an_unreachable_app_is_502() {
    let closed = format!("http://127.0.0.1:{}", platform_tests::process::free_port());
    let fx = fixture_with(Algorithm::RS256, move |s| s.upstream = Some(closed)).await;
    let response = fx
        .verifier
        .client
        .get(format!("{}/x", fx.verifier.url))
        .bearer_auth(&fx.user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
}

/// An upstream that accepts any upgrade and then echoes bytes back, upper-cased.
async fn upgrade_echo_app() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    request.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&request).to_lowercase();
                let identity = text
                    .lines()
                    .find(|l| l.starts_with("x-auth-user-id:"))
                    .unwrap_or("none")
                    .to_owned();
                stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await
                    .unwrap();
                stream
                    .write_all(format!("{identity}\n").as_bytes())
                    .await
                    .unwrap();
                let mut buffer = [0u8; 1024];
                loop {
                    let n = stream.read(&mut buffer).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let upper = buffer[..n].to_ascii_uppercase();
                    stream.write_all(&upper).await.unwrap();
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    let upstream = upgrade_echo_app().await;
    let fx = fixture_with(Algorithm::RS256, move |s| s.upstream = Some(upstream)).await;
    let address = fx.verifier.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {address}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {}\r\nX-Auth-User-Id: forged\r\n\r\n",
        fx.user.access
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    while !String::from_utf8_lossy(&received).contains("x-auth-user-id") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    }
    let text = String::from_utf8_lossy(&received).to_string();
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(
        text.contains(&format!("x-auth-user-id: {}", fx.user.id)),
        "{text}"
    );
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"PING");

    let refused = fx
        .verifier
        .client
        .get(format!("{}/ws", fx.verifier.url))
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
}
