//! The verifier decides on the path the app routes: every spelling it lets through reads the same
//! to every common upstream, behind nginx and as a reverse proxy, and as a property of the
//! canonical form itself.

use jsonwebtoken::Algorithm;
use platform_tests::nginx::Nginx;
use platform_tests::paths::{HOSTILE, PLAIN, raw_get, readings, spellings, under};
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Route, Server, handler};
use proptest::prelude::*;
use token_verifier::path::canonicalize;
use token_verifier::settings::RouteRule;

use crate::support::{Fixture, fixture_with};

const SPELLINGS: usize = 400;

/// An app that answers with the path it received, exactly as received.
async fn path_echo() -> std::net::SocketAddr {
    #[handler]
    fn echo(req: &Request) -> String {
        req.uri().path().to_owned()
    }
    let acceptor = TcpListener::bind("127.0.0.1:0").into_acceptor().await.unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    tokio::spawn(Server::new_with_acceptor(acceptor).run(Route::new().at("/*", echo)));
    addr
}

fn rules(settings: &mut token_verifier::settings::Settings) {
    settings.public_paths = vec!["/public".into()];
    settings.rules = vec![RouteRule {
        path: "/admin".into(),
        methods: vec![],
        roles: vec!["admin".into()],
    }];
}

/// Sends every spelling through `port` with a non-admin token and without one, and checks each
/// that reached the app against every reading of the path the app received.
async fn attack(fx: &Fixture, port: u16) -> (usize, usize) {
    let bearer = format!("Bearer {}", fx.user.access);
    let (mut reached, mut refused) = (0, 0);
    for spelling in spellings(0x5eed, SPELLINGS) {
        for (headers, anonymous) in [(vec![("Authorization", bearer.as_str())], false), (vec![], true)] {
            let (status, received) = raw_get(port, &spelling, &headers).await;
            if status != 200 {
                refused += 1;
                continue;
            }
            reached += 1;
            for reading in readings(&received) {
                assert!(
                    !under("/admin", &reading),
                    "{spelling} reached the app as {received}, routed as {reading}: an admin path without the role"
                );
                assert!(
                    !anonymous || under("/public", &reading),
                    "{spelling} reached the app as {received}, routed as {reading}: not public, no token"
                );
            }
        }
    }
    (reached, refused)
}

#[tokio::test]
async fn no_spelling_walks_past_forward_auth_behind_nginx() {
    let fx = fixture_with(Algorithm::RS256, rules).await;
    let app = path_echo().await;
    let nginx = Nginx::start(app, fx.verifier.url.trim_start_matches("http://"));
    let (reached, refused) = attack(&fx, nginx.port).await;
    println!("behind nginx: {reached} requests reached the app, {refused} refused");
    assert!(reached > 50, "the test must exercise allowed paths too");
}

#[tokio::test]
async fn no_spelling_walks_past_the_reverse_proxy() {
    let app = path_echo().await;
    let fx = fixture_with(Algorithm::RS256, |s| {
        rules(s);
        s.upstream = Some(format!("http://{app}"));
    })
    .await;
    let port: u16 = fx.verifier.url.rsplit(':').next().unwrap().parse().unwrap();
    let (reached, refused) = attack(&fx, port).await;
    println!("reverse proxy: {reached} requests reached the app, {refused} refused");
    assert!(reached > 50, "the test must exercise allowed paths too");
}

fn spelling() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        2 => proptest::sample::select(PLAIN),
        1 => proptest::sample::select(HOSTILE),
    ];
    proptest::collection::vec(piece, 1..5)
        .prop_map(|pieces| pieces.iter().map(|piece| format!("/{piece}")).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 5000, ..ProptestConfig::default() })]

    #[test]
    fn every_allowed_path_is_its_own_canonical_form_and_reads_the_same_upstream(raw in spelling()) {
        if let Ok(canonical) = canonicalize(&raw) {
            prop_assert_eq!(canonicalize(&canonical.spelling), Ok(canonical.clone()));
            // A role rule (matched folded) decides as every reading, folded, would.
            let protected = under("/admin", &canonical.decoded.to_lowercase());
            // A public path (matched exactly) is public under every reading.
            let public = under("/public", &canonical.decoded);
            for reading in readings(&raw) {
                prop_assert_eq!(under("/admin", &reading.to_lowercase()), protected, "{} read as {}", raw, reading);
                prop_assert!(!public || under("/public", &reading), "{} read as {}", raw, reading);
            }
        }
    }
}
