//! The verifier fixture: a server with test-controlled keys, a user, and a verifier.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use platform_tests::keys::{TestKeys, claims};
use platform_tests::server::{TestServer, TestUser, spawn_server_with};
use platform_tests::verifier::{TestVerifier, start_verifier, verifier_settings};
use serde_json::Value;
use token_verifier::settings::Settings;

/// A server, a user, and a verifier following them.
pub struct Fixture {
    pub server: TestServer,
    pub verifier: TestVerifier,
    pub keys: TestKeys,
    pub user: TestUser,
}

pub async fn fixture() -> Fixture {
    fixture_with(Algorithm::RS256, |_| {}).await
}

pub async fn fixture_with(algorithm: Algorithm, customize: impl FnOnce(&mut Settings)) -> Fixture {
    let keys = TestKeys::new(algorithm);
    let dir = keys.dir();
    let server = spawn_server_with(|s| {
        s.keys_dir = Some(dir);
        s.revocation_resync_interval = Duration::from_millis(200);
    })
    .await;
    let user = server.new_user().await;
    let verifier = start_verifier(settings_for(&server, customize), true).await;
    Fixture {
        server,
        verifier,
        keys,
        user,
    }
}

/// Verifier settings following `server`.
pub fn settings_for(server: &TestServer, customize: impl FnOnce(&mut Settings)) -> Settings {
    let mut settings = verifier_settings(
        &format!("{}/.well-known/jwks.json", server.url),
        &server.redis_url,
    );
    customize(&mut settings);
    settings
}

impl Fixture {
    /// Claims for the fixture's user, as the server would issue them.
    pub fn claims(&self) -> Value {
        claims(&self.user.id, &self.user.session)
    }

    /// Asserts the verifier refuses `token` as an invalid token.
    pub async fn assert_refused(&self, token: &str) {
        let response = self.verifier.verify(token).await;
        assert_eq!(response.status(), 401, "accepted: {token}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"auth-platform\", error=\"invalid_token\""
        );
        assert!(response.headers().get("x-auth-user-id").is_none());
    }
}
